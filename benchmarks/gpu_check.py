"""One check of the CUDA paths, sized to finish in under 8 minutes on one GPU; prints one table.

1. Bytes: every registered corruption (the 19 of -C and the 10 of -C-bar) at severities 1-5 on
   the same images on the CPU and on the device: equal, or the share of differing values and
   the largest difference.
2. Speed: corrupt images/s on the device for the full CIFAR set (the 15 common corruptions x 5
   severities of --n images, CIFAR table; wall clock after a warm-up, synchronised).
3. Methods: for every registered method one training step with AMP and channels_last (the
   preset's recipe, --arch to override) and one evaluation batch under each protocol of the
   preset: ok (finite loss, predictions of the right shape) or the error, with seconds.

The fast recipe (a GPU preset tuned for images/s) does not exist yet, so it is not timed.
It also runs on the CPU (`--device cpu`, small sizes) so that its logic is tested:

    python benchmarks/gpu_check.py                       # on the GPU (defaults: about 5 min)
    python benchmarks/gpu_check.py --device cpu --n 8 --n-bytes 4 --arch wrn10_1 --batch-size 8
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_speed import make_bench
from metabn_bench.config import SuiteConfig, load_preset, replace
from metabn_bench.corruptions import COMMON, tables
from metabn_bench.corruptions.generate import corrupt_images
from metabn_bench.corruptions.names import CBAR, canonical_order
from metabn_bench.corruptions.ops import CORRUPTIONS
from metabn_bench.data.loader import DeviceLoader, to_float
from metabn_bench.device import autocast, memory_format, resolve_device
from metabn_bench.evaluation.protocols import (
    PROTOCOLS,
    NotApplicableError,
    make_protocol,
    parse_protocol,
)
from metabn_bench.methods import METHODS

REAL = Path("/work/data/cifar10/test/images.npy")


def load_images(n: int) -> tuple[np.ndarray, str]:
    """The first n CIFAR-10 test images when present, else synthetic random images."""
    if REAL.exists():
        return np.load(REAL, mmap_mode="r")[:n].copy(), "CIFAR-10 test"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "random uint8 images"


def _params(name: str, severity: int) -> object:
    # ImageNet-C-bar's own five have only the ImageNet-C-bar table
    in_cifar = name in tables.CBAR_CIFAR or name not in tables.CBAR_IMAGENET
    return tables.params("cifar" if in_cifar else "imagenet", name, severity)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare_bytes(images: np.ndarray, name: str, device: torch.device) -> list[str]:
    """One table row: the corruption's CPU and device bytes over severities 1-5."""
    differing, total, worst = 0, 0, 0
    for severity in range(1, 6):
        cpu = corrupt_images(images, name, severity, _params(name, severity), 0,
                             torch.device("cpu"))
        dev = corrupt_images(images, name, severity, _params(name, severity), 0, device)
        diff = np.abs(cpu.astype(np.int16) - dev.astype(np.int16))
        differing += int((diff > 0).sum())
        total += diff.size
        worst = max(worst, int(diff.max()))
    verdict = "equal" if differing == 0 else f"{100 * differing / total:.4f}% differ (max {worst})"
    return [f"bytes {name}", verdict]


def corrupt_speed(images: np.ndarray, device: torch.device, batch_size: int,
                  names: tuple[str, ...] = COMMON) -> list[str]:
    """One table row: images/s of the corruptions (the 15 common ones) x 5 severities."""
    for name in names:  # warm-up: kernels, textures, first allocations
        corrupt_images(images[:8], name, 1, _params(name, 1), 0, device, batch_size)
    _sync(device)
    start = time.perf_counter()
    for name in names:
        for severity in range(1, 6):
            corrupt_images(images, name, severity, _params(name, severity), 0, device, batch_size)
    _sync(device)
    seconds = time.perf_counter() - start
    count = len(names) * 5 * len(images)
    return [f"corrupt speed ({len(names)} x 5 x {len(images):,} images)",
            f"{count / seconds:,.0f} images/s ({seconds:.1f} s)"]


def method_check(suite: SuiteConfig, name: str, device: torch.device,
                 images: np.ndarray) -> list[str]:
    """One table row: one AMP + channels_last training step and one evaluation per protocol."""
    start = time.perf_counter()
    try:
        amp_suite = replace(suite, train=replace(suite.train, amp=True, channels_last=True))
        bs = amp_suite.train.optim.batch_size
        labels = np.arange(len(images)) % 10
        loader = DeviceLoader(images, labels, bs, device)
        bench = make_bench(amp_suite, name, loader, device)
        batch = bench.prepare()
        bench.step(batch)
        if not all(torch.isfinite(p).all() for p in bench.model.parameters()):
            raise RuntimeError("non-finite weights after one step")
        fmt = memory_format(device, True)
        test = torch.from_numpy(images[:bs]).to(device)
        skipped = []
        for spec in amp_suite.eval.protocols:
            bench.method.prepare_eval(bench.model)

            def forward(x: torch.Tensor) -> torch.Tensor:
                with autocast(device, True):
                    return bench.model(bench.method.normalize(x))

            try:
                protocol = make_protocol(spec, bench.model, forward)
            except NotApplicableError:  # bn / tent on a model without BatchNorm: by design
                skipped.append(spec)
                continue
            protocol.reset()
            size = min(bs, PROTOCOLS.get(parse_protocol(spec)[0]).default_batch_size)
            out = protocol.predict(to_float(test[:size], fmt))
            if out.shape[0] != size:
                raise RuntimeError(f"protocol {spec}: {out.shape[0]} predictions for {size}")
        _sync(device)
        verdict = f"ok ({time.perf_counter() - start:.1f} s)" + (
            f"; {', '.join(skipped)} not applicable (no BatchNorm)" if skipped else "")
    except Exception as exc:  # one row per method: a failure must not hide the others
        where = traceback.extract_tb(exc.__traceback__)[-1]
        verdict = f"FAILED: {type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
    protocols = ",".join(suite.eval.protocols)
    return [f"method {name} (AMP + channels_last step; eval {protocols})", verdict]


def run(argv: list[str] | None = None) -> list[list[str]]:
    """Every check; returns the table's rows (and prints the table)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=10_000, help="images for the corrupt speed")
    ap.add_argument("--n-bytes", type=int, default=256, help="images for the byte comparison")
    ap.add_argument("--preset", default="cifar10", help="suite preset of the method checks")
    ap.add_argument("--arch", default="", help="override the preset's architecture")
    ap.add_argument("--batch-size", type=int, default=0, help="override the training batch size")
    ap.add_argument("--methods", default="", help="comma-separated (default: every registered)")
    ap.add_argument("--corruptions", default="", help="byte check: comma-separated (default: all)")
    ap.add_argument("--speed-corruptions", default=",".join(COMMON),
                    help="speed: comma-separated (default: the 15 common ones)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    suite = load_preset(args.preset)
    train = suite.train
    if args.arch:
        train = replace(train, arch=args.arch)
    if args.batch_size:
        train = replace(train, optim=replace(train.optim, batch_size=args.batch_size))
    suite = replace(suite, train=train)
    images, source = load_images(max(args.n, args.n_bytes, 2 * train.optim.batch_size))
    names = [c for c in args.corruptions.split(",") if c] or canonical_order(
        [n for n in CORRUPTIONS.names() if n not in CBAR]) + list(CBAR)
    rows = [compare_bytes(images[:args.n_bytes], name, device) for name in names]
    speed = tuple(c for c in args.speed_corruptions.split(",") if c)
    rows.append(corrupt_speed(images[:args.n], device, 500, speed))
    methods = [m for m in args.methods.split(",") if m] or METHODS.names()
    rows += [method_check(suite, m, device, images[:2 * train.optim.batch_size])
             for m in methods]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\ndevice {device} ({gpu}); torch {torch.__version__}; images: {source}; byte check "
          f"on {args.n_bytes} images (device against CPU, severities 1-5)")
    print(tabulate(rows, headers=["check", "result"], tablefmt="github"))
    return rows


if __name__ == "__main__":
    run()
