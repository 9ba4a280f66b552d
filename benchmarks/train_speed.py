"""Training and evaluation speed of every registered method, relative to vanilla, in one run.

For each method, with the architecture, batch size, hparams and protocols of a preset:
- train images/s of a whole step (on-device loader + crop/flip + the method's batch
  transform + forward/backward/SGD step), and its ratio to vanilla;
- the data pipeline alone (loader + crop/flip) and the training step alone (training/step.py's
  `train_step`, which the training loop calls: batch transform + forward/backward/SGD, on
  pre-made batches): ms per step and the data pipeline's share of a step;
- eval images/s for each of the preset's test-time protocols, at their default batch sizes;
- an estimate of the preset's whole table (one seed): epochs x steps x step time + cells x
  test images / eval speed, per method and in total.
Methods are timed in interleaved rounds and each number is the best (fastest) round, the
estimator least affected by other processes on a shared machine; compare ratios there, not
absolute numbers. `--clock cpu` (CPU device only) times with the process's CPU time instead of
the wall clock: on a machine shared with other jobs, CPU time is much less disturbed than wall
time; use it with --threads 1 (idle worker threads also burn CPU time). With
--vanilla-train-ips / --vanilla-eval-ips (vanilla's throughput measured on an idle machine)
the estimate scales every method's measured ratio to those numbers. Every registered method
is timed by default, the normalisation zoo included; a protocol that does not apply to a
method (bn / tent on a model without BatchNorm) shows n/a and adds no evaluation time.

    python benchmarks/train_speed.py --preset cifar10-cpu --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tabulate import tabulate

from metabn_bench.config import SuiteConfig, load_preset, replace
from metabn_bench.data.augment import crop_flip
from metabn_bench.data.loader import DeviceLoader, to_float
from metabn_bench.device import autocast, grad_scaler, memory_format, resolve_device
from metabn_bench.evaluation.protocols import (
    PROTOCOLS,
    NotApplicableError,
    make_protocol,
    parse_protocol,
)
from metabn_bench.methods import METHODS, Batch, Method, build_method
from metabn_bench.seeding import generator
from metabn_bench.training.step import train_step

CELLS = 1 + 15 * 5  # clean + 15 corruptions x 5 severities


@dataclass
class Bench:
    """One method's objects and its timings (seconds per step / per image, over rounds)."""

    method: Method
    model: torch.nn.Module
    step: Callable[[Batch], None]
    prepare: Callable[[], Batch]
    full: list[float] = field(default_factory=list)
    data: list[float] = field(default_factory=list)
    model_only: list[float] = field(default_factory=list)
    eval: dict[str, list[float]] = field(default_factory=dict)


CLOCK: Callable[[], float] = time.perf_counter


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_bench(suite: SuiteConfig, name: str, loader: DeviceLoader, device: torch.device) -> Bench:
    """A method, its model and optimiser, and closures for its data and model halves."""
    cfg = replace(suite.train, method=name, hparams=dict(suite.method_hparams.get(name, {})))
    torch.manual_seed(0)
    method = build_method(cfg, 10, device)
    fmt = memory_format(device, cfg.channels_last)
    model = method.build_model().to(device, memory_format=fmt).train()
    o = cfg.optim
    opt = torch.optim.SGD(method.parameter_groups(model), lr=o.lr, momentum=o.momentum,
                          nesterov=o.nesterov, weight_decay=o.weight_decay)
    scaler = grad_scaler(device, cfg.amp)
    gen = generator(device, 0, "bench", name)
    batches = iter(())

    def prepare() -> Batch:
        nonlocal batches
        item = next(batches, None)
        if item is None:
            batches = iter(loader.epoch(0))
            item = next(batches)
        images, labels = item
        x = crop_flip(to_float(images, fmt), cfg.data.crop_padding, cfg.data.hflip, gen)
        return Batch(x, labels)

    def step(batch: Batch) -> None:
        out = train_step(method, model, batch, opt, scaler, cfg.amp)
        float(out.loss.detach())  # the training loop reads the loss every step

    return Bench(method, model, step, prepare)


def time_round(b: Bench, steps: int, device: torch.device) -> None:
    """Seconds per step: whole step, data pipeline alone, model alone (on pre-made batches)."""
    _sync(device)
    t0 = CLOCK()
    for _ in range(steps):
        b.step(b.prepare())
    _sync(device)
    t1 = CLOCK()
    made = [b.prepare() for _ in range(steps)]
    _sync(device)
    t2 = CLOCK()
    for batch in made:
        b.step(batch)
    _sync(device)
    t3 = CLOCK()
    b.full.append((t1 - t0) / steps)
    b.data.append((t2 - t1) / steps)
    b.model_only.append((t3 - t2) / steps)


def time_eval(b: Bench, protocols: tuple[str, ...], images: torch.Tensor, fmt: torch.memory_format,
              device: torch.device, amp: bool) -> None:
    """Seconds per test image of each protocol (a fresh copy of the model per protocol); a
    protocol that does not apply to the model (bn / tent without BatchNorm) gets no timing."""
    for spec in protocols:
        model = copy.deepcopy(b.model)
        b.method.prepare_eval(model)

        def forward(x: torch.Tensor, model: torch.nn.Module = model) -> torch.Tensor:
            with autocast(device, amp):
                return model(b.method.normalize(x))

        try:
            protocol = make_protocol(spec, model, forward)
        except NotApplicableError:
            b.eval.setdefault(spec, [])
            continue
        bs = PROTOCOLS.get(parse_protocol(spec)[0]).default_batch_size
        protocol.reset()
        protocol.predict(to_float(images[:bs], fmt))  # warm-up
        protocol.reset()
        _sync(device)
        t0 = CLOCK()
        for start in range(0, images.shape[0], bs):
            protocol.predict(to_float(images[start:start + bs], fmt))
        _sync(device)
        b.eval.setdefault(spec, []).append((CLOCK() - t0) / images.shape[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cifar10-cpu", help="arch, batch size, hparams, protocols")
    p.add_argument("--methods", default="", help="comma-separated (default: every registered)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--steps", type=int, default=4, help="training steps per phase per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--n-train", type=int, default=50000, help="training images (for the estimate)")
    p.add_argument("--vanilla-train-ips", type=float, default=0.0,
                   help="vanilla train images/s on an idle machine (scales the estimate)")
    p.add_argument("--vanilla-eval-ips", type=float, default=0.0,
                   help="vanilla eval images/s (protocol none) on an idle machine")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock, or this process's CPU time (CPU device only)")
    args = p.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = load_preset(args.preset)
    device = resolve_device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        p.error("--clock cpu measures CPU work; use it with --device cpu")
    names = [n for n in args.methods.split(",") if n] or METHODS.names()
    if "vanilla" not in names:
        names.insert(0, "vanilla")
    rng = np.random.default_rng(0)
    bs = suite.train.optim.batch_size
    n_images = bs * (args.steps * 2 + 2)
    images = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    loader = DeviceLoader(images, rng.integers(0, 10, n_images), bs, device)
    benches = {n: make_bench(suite, n, loader, device) for n in names}
    for b in benches.values():
        time_round(b, 1, device)  # warm-up
        b.full.clear()
        b.data.clear()
        b.model_only.clear()
    fmt = memory_format(device, suite.train.channels_last)
    test = torch.from_numpy(rng.integers(0, 256, (args.eval_images, 32, 32, 3), dtype=np.uint8))
    test = test.to(device)
    for r in range(args.rounds):
        for name, b in benches.items():
            print(f"round {r + 1}/{args.rounds}: {name}", flush=True)
            time_round(b, args.steps, device)
            time_eval(b, suite.eval.protocols, test, fmt, device, suite.train.amp)
    report(benches, suite, args)


def report(benches: dict[str, Bench], suite: SuiteConfig, args: argparse.Namespace) -> None:
    """Print the speed table and the preset estimate."""
    med = min  # the fastest round: the least disturbed by other load
    bs = suite.train.optim.batch_size
    protocols = suite.eval.protocols
    van = benches["vanilla"]
    rows, est = [], []
    train_scale = (bs / med(van.full)) / args.vanilla_train_ips if args.vanilla_train_ips else 1.0
    eval_scale = (1 / med(van.eval[protocols[0]])) / args.vanilla_eval_ips \
        if args.vanilla_eval_ips else 1.0
    n_test = suite.corrupt.n_test or 10000
    steps = suite.train.epochs * (args.n_train // bs)
    total = 0.0
    for name, b in benches.items():
        full, data, model = med(b.full), med(b.data), med(b.model_only)
        row = [name, f"{bs / full:,.0f}", f"{med(van.full) / full:.2f}",
               f"{1000 * data:.1f}", f"{1000 * model:.1f}", f"{100 * data / (data + model):.0f}%"]
        eval_s = 0.0
        for spec in protocols:
            if not b.eval.get(spec):  # not applicable to this method: n/a, and no eval time
                row += ["n/a", "n/a"]
                continue
            per_image = med(b.eval[spec])
            row += [f"{1 / per_image:,.0f}", f"{med(van.eval[spec]) / per_image:.2f}"]
            eval_s += CELLS * n_test * per_image * eval_scale
        rows.append(row)
        train_s = steps * full * train_scale
        total += train_s + eval_s
        est.append([name, f"{train_s / 60:.1f}", f"{eval_s / 60:.1f}", f"{(train_s + eval_s) / 60:.1f}"])
    headers = ["method", "train img/s", "x vanilla", "data ms/step", "model ms/step", "data share"]
    for spec in protocols:
        headers += [f"eval {spec} img/s", "x vanilla"]
    print(f"\n{suite.name}: {suite.train.arch}, batch {bs}, device {resolve_device(args.device)}, "
          f"{torch.get_num_threads()} threads, {args.clock} clock; best of {args.rounds} rounds "
          f"of {args.steps} steps")
    print(tabulate(rows, headers=headers, tablefmt="github"))
    scaled = " (scaled to the given vanilla throughput)" if train_scale != 1 or eval_scale != 1 else ""
    print(f"\nEstimate for '{suite.name}' with one seed{scaled}: {suite.train.epochs} epochs x "
          f"{args.n_train // bs} steps; {CELLS} cells x {n_test} test images x "
          f"{len(protocols)} protocols")
    est.append(["total", "", "", f"{total / 60:.1f}"])
    print(tabulate(est, headers=["method", "train min", "eval min", "total min"], tablefmt="github"))


if __name__ == "__main__":
    main()
