"""Speed of the corruption engine against the `imagecorruptions` package, in one run.

The same images go through (a) the `imagecorruptions` package (ImageNet-C table, one image at a
time, as its users call it), (b) this package's torch engine with the same `imagenet` table
(the like-for-like comparison) and (c) the torch engine with the `cifar` table (what a
CIFAR-10-C-style set uses). Prints images/s per corruption (all five severities), the overall
ratio, and the time of a full 15 x 5 x 10,000 CIFAR set, measured (--full) or extrapolated
from the sample (said which).

`--per-core R` prints the per-core breakdown instead: process CPU time per image of each corruption (all
five severities, one torch thread) for the package and the engine (cifar table), measured in R
interleaved rounds (package, engine, package, ... so that load from other processes hits both
alike; the fastest round counts), with two floors per op: the I/O floor (what every op pays to
read its uint8 bytes, convert them to float64 NCHW and back, and write them: `corrupt_images`
with an identity op) and the draw floor (the op's own random draws replayed alone). What is left
above the floors is the op's arithmetic.

    .venv/bin/python benchmarks/corruptions.py --n 1000 --n-reference 200
    .venv/bin/python benchmarks/corruptions.py --n 500 --n-reference 100 --threads 1 --per-core 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metabn_bench.config import CorruptConfig
from metabn_bench.corruptions import COMMON, reference_backend, tables
from metabn_bench.corruptions import generate as generate_mod
from metabn_bench.corruptions.generate import corrupt_dataset, corrupt_images, cpu_workers
from metabn_bench.corruptions.ops import CORRUPTIONS
from metabn_bench.corruptions.registry import Corruption
from metabn_bench.corruptions.rng import ImageRandom
from metabn_bench.data.arrays import ArraySet
from metabn_bench.data.synthetic import make_split

REAL = Path("/work/data/cifar10/test/images.npy")


def load_images(n: int) -> tuple[np.ndarray, str]:
    """The first n CIFAR-10 test images when present here, else the synthetic test set."""
    if REAL.exists():
        return np.load(REAL, mmap_mode="r")[:n].copy(), f"CIFAR-10 test (JPEG copy), {REAL}"
    return make_split("test", n).images, "synthetic test set (CIFAR-10 not found)"


CPU_SECONDS: dict[str, float] = {"ref": 0.0, "in": 0.0, "cifar": 0.0}


def time_torch(images: np.ndarray, name: str, preset: str, device: torch.device,
               batch_size: int) -> float:
    """Wall seconds for all five severities of one corruption with the torch engine (process
    CPU seconds are added to CPU_SECONDS)."""
    start, cpu = time.perf_counter(), time.process_time()
    for severity in range(1, 6):
        corrupt_images(images, name, severity, tables.params(preset, name, severity), 0, device,
                       batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    CPU_SECONDS["in" if preset == "imagenet" else "cifar"] += (time.process_time() - cpu) / len(images)
    return time.perf_counter() - start


def time_reference(images: np.ndarray, name: str) -> float:
    """Wall seconds for all five severities of one corruption with the imagecorruptions package."""
    start, cpu = time.perf_counter(), time.process_time()
    for severity in range(1, 6):
        reference_backend.corrupt_images(images, name, severity, 0)
    CPU_SECONDS["ref"] += (time.process_time() - cpu) / len(images)
    return time.perf_counter() - start


def cpu_ms(fn: object, n: int) -> float:
    """Process CPU milliseconds per image of fn() over n images."""
    start = time.process_time()
    fn()  # type: ignore[operator]
    return (time.process_time() - start) / n * 1e3


class ReplayRandom(ImageRandom):
    """An ImageRandom that records every draw an op asks for, to replay the draws alone."""

    calls: ClassVar[list[tuple[str, tuple, dict]]] = []

    def _record(self, kind: str, *args: object, **kwargs: object) -> object:
        ReplayRandom.calls.append((kind, args, kwargs))
        return getattr(ImageRandom, kind)(self, *args, **kwargs)

    def uniform(self, *shape, **kw):  # type: ignore[no-untyped-def]
        return self._record("uniform", *shape, **kw)

    def normal(self, *shape, **kw):  # type: ignore[no-untyped-def]
        return self._record("normal", *shape, **kw)

    def randint(self, *args, **kw):  # type: ignore[no-untyped-def]
        return self._record("randint", *args, **kw)

    def poisson(self, *args, **kw):  # type: ignore[no-untyped-def]
        return self._record("poisson", *args, **kw)


def floors(images: np.ndarray, name: str, severity: int) -> tuple[float, float]:
    """(I/O floor, draw floor) in CPU ms per image for one (corruption, severity)."""
    original = CORRUPTIONS.get(name)
    params = tables.params("cifar", name, severity)
    CORRUPTIONS._items[name] = Corruption(name, lambda x, p, rng: x * 255, False)
    try:
        io = cpu_ms(lambda: corrupt_images(images, name, severity, params, 0, CPU), len(images))
    finally:
        CORRUPTIONS._items[name] = original
    # record the op's draws on one chunk, then time only those draws for every chunk
    ReplayRandom.calls = []
    chunk = generate_mod.CPU_CHUNK
    rng = ReplayRandom(0, name, severity, range(chunk), CPU)
    original.op(generate_mod.registry.as_input(torch.from_numpy(images[:chunk])), params, rng)
    calls = list(ReplayRandom.calls)

    def replay() -> None:
        for start in range(0, len(images), chunk):
            r = ImageRandom(0, name, severity, range(start, start + chunk), CPU)
            for kind, args, kwargs in calls:
                getattr(ImageRandom, kind)(r, *args, **kwargs)

    return io, cpu_ms(replay, len(images)) if calls else 0.0


CPU = torch.device("cpu")


def per_core(names: list[str], ours: np.ndarray, ref: np.ndarray, rounds: int) -> None:
    """The interleaved per-core breakdown (module docstring)."""
    best: dict[str, dict[str, float]] = {n: {"ref": np.inf, "ours": np.inf} for n in names}
    for r in range(rounds):
        for name in names:
            t_ref = cpu_ms(lambda name=name: [reference_backend.corrupt_images(ref, name, s, 0)
                                              for s in range(1, 6)], len(ref))
            t_ours = cpu_ms(lambda name=name: [
                corrupt_images(ours, name, s, tables.params("cifar", name, s), 0, CPU)
                for s in range(1, 6)], len(ours))
            best[name]["ref"] = min(best[name]["ref"], t_ref)
            best[name]["ours"] = min(best[name]["ours"], t_ours)
        print(f"  per-core round {r + 1}/{rounds} done", flush=True)
    rows, total = [], {"ref": 0.0, "ours": 0.0, "io": 0.0, "draw": 0.0}
    for name in names:
        io, draw = (sum(v) for v in zip(*(floors(ours, name, s) for s in range(1, 6))))
        b = best[name]
        total["ref"] += b["ref"]
        total["ours"] += b["ours"]
        total["io"] += io
        total["draw"] += draw
        rows.append([name, f"{b['ref']:.2f}", f"{b['ours']:.3f}", f"{b['ref'] / b['ours']:.1f}x",
                     f"{io:.3f}", f"{draw:.3f}", f"{max(b['ours'] - io - draw, 0):.3f}"])
    rows.append(["all (15 x 5 cells per image)" if len(names) == 15 else "all",
                 f"{total['ref']:.1f}", f"{total['ours']:.2f}",
                 f"{total['ref'] / total['ours']:.1f}x", f"{total['io']:.2f}",
                 f"{total['draw']:.2f}", f"{max(total['ours'] - total['io'] - total['draw'], 0):.2f}"])
    print(f"\nper core: process CPU ms per image, five severities, one thread; fastest of {rounds} "
          f"interleaved rounds; imagecorruptions (imagenet table, {len(ref)} images) against the "
          f"engine (cifar table, {len(ours)} images)")
    print(tabulate(rows, headers=["corruption", "imagecorruptions ms", "engine ms", "ratio",
                                  "I/O floor ms", "draw floor ms", "above floors ms"],
                   tablefmt="github"))


def main() -> None:
    """Run the comparison and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images for the torch engine")
    ap.add_argument("--n-reference", type=int, default=200, help="images for imagecorruptions")
    ap.add_argument("--corruptions", default=",".join(COMMON))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--per-core", type=int, default=0, metavar="ROUNDS",
                    help="also the interleaved per-core breakdown with floors, in ROUNDS rounds")
    ap.add_argument("--full", action="store_true",
                    help="also time the full 15 x 5 x 10,000 CIFAR set (else extrapolate)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [c for c in args.corruptions.split(",") if c]
    images, source = load_images(max(args.n, args.n_reference))
    ours_images, ref_images = images[:args.n], images[:args.n_reference]
    # Warm-up: textures, JIT of the package's glass blur, first-call allocations.
    for name in names:
        corrupt_images(images[:8], name, 1, tables.params("cifar", name, 1), 0, device)
        if args.n_reference:
            reference_backend.corrupt_images(images[:2], name, 1, 0)
    if args.per_core:
        per_core(names, ours_images, ref_images, args.per_core)
        return
    rows, totals = [], {"ref": 0.0, "in": 0.0, "cifar": 0.0}
    for name in names:
        t_ref = time_reference(ref_images, name) if args.n_reference else float("nan")
        t_in = time_torch(ours_images, name, "imagenet", device, args.batch_size)
        t_cifar = time_torch(ours_images, name, "cifar", device, args.batch_size)
        rate_ref = 5 * len(ref_images) / t_ref
        rate_in = 5 * len(ours_images) / t_in
        rate_cifar = 5 * len(ours_images) / t_cifar
        totals["ref"] += 1 / rate_ref
        totals["in"] += 1 / rate_in
        totals["cifar"] += 1 / rate_cifar
        rows.append([name, f"{rate_ref:,.0f}", f"{rate_in:,.0f}", f"{rate_in / rate_ref:.1f}x",
                     f"{rate_cifar:,.0f}"])
        print(f"  {name}: imagecorruptions {rate_ref:,.0f} img/s, torch/imagenet "
              f"{rate_in:,.0f} img/s, torch/cifar {rate_cifar:,.0f} img/s", flush=True)
    rows.append(["all (per image, every corruption once)", f"{1 / totals['ref']:,.1f}",
                 f"{1 / totals['in']:,.1f}", f"{totals['ref'] / totals['in']:.1f}x",
                 f"{1 / totals['cifar']:,.1f}"])
    print(f"\nimages: {source}; torch on {device} ({torch.get_num_threads()} threads), "
          f"{len(ours_images)} images; imagecorruptions ({reference_backend.version()}) on "
          f"{len(ref_images)} images; each corruption at severities 1-5")
    print(tabulate(rows, headers=["corruption", "imagecorruptions img/s", "torch imagenet img/s",
                                  "ratio", "torch cifar img/s"], tablefmt="github"))
    print(f"process CPU time per image, all {len(names)} corruptions x 5 severities (less "
          f"sensitive to other load on the machine): imagecorruptions "
          f"{CPU_SECONDS['ref'] * 1e3:.1f} ms, torch/imagenet {CPU_SECONDS['in'] * 1e3:.1f} ms "
          f"(ratio {CPU_SECONDS['ref'] / CPU_SECONDS['in']:.1f}x), torch/cifar "
          f"{CPU_SECONDS['cifar'] * 1e3:.1f} ms (ratio {CPU_SECONDS['ref'] / CPU_SECONDS['cifar']:.1f}x)")
    per_set = 10_000 * 5
    ref_full = totals["ref"] * per_set
    print(f"\nfull {len(names)} x 5 x 10,000 set, extrapolated from these rates: "
          f"imagecorruptions {ref_full / 60:.1f} min, torch (imagenet table) "
          f"{totals['in'] * per_set / 60:.2f} min, torch (cifar table) "
          f"{totals['cifar'] * per_set / 60:.2f} min; ratio imagecorruptions / torch-cifar "
          f"{totals['ref'] / totals['cifar']:.1f}x")
    if args.full:
        full, _ = load_images(10_000)
        labels = np.zeros(len(full), dtype=np.int64)
        clean = ArraySet(full, labels, tuple(str(i) for i in range(10)), "benchmark images")
        cfg = CorruptConfig(preset="cifar", corruptions=tuple(names), batch_size=args.batch_size)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            corrupt_dataset(clean, Path(out) / "set", cfg, device, progress=False)
            elapsed = time.perf_counter() - start
        print(f"measured: `corrupt` of the full {len(names)} x 5 x {len(full):,} CIFAR set "
              f"(torch engine, {cpu_workers() if device.type == 'cpu' else 1} worker thread(s), "
              f"files written and hashed): {elapsed:.1f} s "
              f"({len(names) * 5 * len(full) / elapsed:,.0f} img/s); "
              f"imagecorruptions extrapolated / measured: {ref_full / elapsed:.1f}x")

if __name__ == "__main__":
    main()
