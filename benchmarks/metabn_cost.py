"""What Meta-BN costs: eval images/s against vanilla, and training time per step against
vanilla and AugMix, all measured in one run on the same machine.

- Eval: the same architecture with BatchNorm2d (vanilla) and with Meta-BN (each auxiliary net),
  eval mode, no gradients, `--eval-batch` images per forward (the `none` protocol's 1000).
  Target: Meta-BN within 10% of vanilla's images/s.
- Train: one optimiser step (the method's batch transform, training_step, backward, SGD step)
  on a fixed batch of `--batch` images for vanilla, Meta-BN in each training mode, and AugMix
  when the `augmix` method is registered. Meta-BN's shift proxy (AugMix chains) is also timed
  alone, so its share of a step is visible.
Rounds are interleaved (every variant once per round) and each number is the best round, the
estimator least disturbed by other processes. `--clock cpu` times with the process's CPU time
instead of the wall clock (use it with --threads 1 on a shared machine).

    .venv/bin/python benchmarks/metabn_cost.py --arch wrn40_2 --device cpu --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Import this checkout's package (a script's sys.path[0] is benchmarks/, not the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tabulate import tabulate

from metabn_bench import fsio, provenance
from metabn_bench.config import TrainConfig, from_dict, to_dict
from metabn_bench.data.augment import crop_flip
from metabn_bench.device import autocast, memory_format, resolve_device
from metabn_bench.methods import METHODS, Batch, build_method
from metabn_bench.seeding import generator
from metabn_bench.training.step import train_step

Timed = Callable[[], None]


def _config(method: str, arch: str, batch: int, hparams: dict, device: str) -> TrainConfig:
    return from_dict(TrainConfig, {"method": method, "arch": arch, "device": device,
                                   "optim": {"batch_size": batch}, "hparams": hparams})


def eval_variants(arch: str, device: torch.device, n_images: int,
                  fmt: torch.memory_format) -> dict[str, Timed]:
    """name -> a function that classifies n_images in eval mode."""
    images = torch.rand(n_images, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    variants: dict[str, Timed] = {}
    specs = [("vanilla", "vanilla", {})] + [
        (f"metabn ({aux})", "metabn", {"aux_net": aux}) for aux in ("se_mlp", "per_channel",
                                                                    "shared")]
    # The cheaper placement: corrections only where the feature maps are largest.
    specs.append(("metabn (se_mlp, first_stage)", "metabn", {"placement": "first_stage"}))
    for name, method_name, hparams in specs:
        cfg = _config(method_name, arch, 128, hparams, str(device))
        method = build_method(cfg, 10, device)
        model = method.build_model().to(device, memory_format=fmt)
        method.prepare_eval(model)

        def run(model: torch.nn.Module = model, method=method, cfg=cfg) -> None:
            with torch.no_grad(), autocast(device, cfg.amp):
                model(method.normalize(images)).float().sum().item()

        variants[name] = run
    return variants


def train_variants(arch: str, device: torch.device, batch_size: int,
                   fmt: torch.memory_format) -> dict[str, Timed]:
    """name -> a function that runs one training step (plus Meta-BN's proxy alone)."""
    gen = generator(device, 0, "bench")
    x = crop_flip(torch.rand(batch_size, 3, 32, 32, device=device, generator=gen)
                  .contiguous(memory_format=fmt), 4, True, gen)
    y = torch.randint(0, 10, (batch_size,), device=device, generator=gen)
    specs = [("vanilla", "vanilla", {})]
    specs += [(f"metabn {mode}", "metabn", {"training_mode": mode})
              for mode in ("episodic", "joint")]
    if "augmix" in METHODS:
        specs.append(("augmix", "augmix", {}))
    variants: dict[str, Timed] = {}
    for name, method_name, hparams in specs:
        cfg = _config(method_name, arch, batch_size, hparams, str(device))
        method = build_method(cfg, 10, device)
        model = method.build_model().to(device, memory_format=fmt).train()
        opt = torch.optim.SGD(method.parameter_groups(model), lr=0.01, momentum=0.9)

        def step(model: torch.nn.Module = model, method=method, opt=opt, cfg=cfg) -> None:
            out = train_step(method, model, Batch(x, y, lr=0.01), opt, amp=cfg.amp)
            out.loss.item()

        variants[name] = step
        if name == "metabn episodic":
            variants["  of which: AugMix proxy alone"] = lambda m=method: m.proxy(x).sum().item()
    # post_hoc: the backbone is frozen; time it with the aux nets as the only trainable part.
    cfg = _config("metabn", arch, batch_size, {"training_mode": "post_hoc"}, str(device))
    method = build_method(cfg, 10, device)
    model = method.build_model().to(device, memory_format=fmt)
    from metabn_bench.models.metabn import auxiliary_parameters

    aux = {id(p) for p in auxiliary_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in aux)
    opt = torch.optim.SGD(method.parameter_groups(model), lr=0.01, momentum=0.9)

    def post_hoc_step() -> None:
        train_step(method, model, Batch(x, y, lr=0.01), opt)

    variants["metabn post_hoc"] = post_hoc_step
    return variants


def best_times(variants: dict[str, Timed], rounds: int, repeats: int,
               clock: Callable[[], float], sync: Callable[[], None]) -> dict[str, float]:
    """Best-of-rounds seconds per call, rounds interleaved across variants (after a warm-up)."""
    for fn in variants.values():
        fn()
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            sync()
            t0 = clock()
            for _ in range(repeats):
                fn()
            sync()
            best[name] = min(best[name], (clock() - t0) / repeats)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="wrn40_2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128, help="training batch size")
    parser.add_argument("--train-steps", type=int, default=2, help="steps per timed round")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures CPU time; use it with --device cpu")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fmt = memory_format(device, True)
    torch.manual_seed(0)

    evals = best_times(eval_variants(args.arch, device, args.eval_images, fmt), args.rounds, 1,
                       clock, sync)
    eval_rows = [[name, f"{args.eval_images / s:,.0f}", f"{evals['vanilla'] / s:.3f}"]
                 for name, s in evals.items()]
    print(f"\nEval ({args.arch}, batch {args.eval_images}, {device}, {torch.get_num_threads()} "
          f"threads, {args.clock} clock, best of {args.rounds} rounds)")
    print(tabulate(eval_rows, ["model", "images/s", "throughput vs vanilla"], tablefmt="github"))
    trains: dict[str, float] = {}
    if not args.skip_train:
        trains = best_times(train_variants(args.arch, device, args.batch, fmt), args.rounds,
                            args.train_steps, clock, sync)
        train_rows = [[name, f"{1000 * s:.1f}", f"{s / trains['vanilla']:.2f}x"]
                      for name, s in trains.items()]
        print(f"\nTraining step (batch {args.batch})")
        print(tabulate(train_rows, ["method", "ms / step", "cost vs vanilla"], tablefmt="github"))
    if args.out:
        record = {"provenance": provenance.environment(device), "arguments": to_dict(vars(args)),
                  "eval_seconds_per_batch": evals, "train_seconds_per_step": trains}
        record["arguments"]["out"] = str(args.out)
        fsio.write_text(args.out, json.dumps(record, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
