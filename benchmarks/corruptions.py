"""Speed of the corruption engine against the `imagecorruptions` package, in one run.

The same images go through (a) the `imagecorruptions` package (ImageNet-C table, one image at a
time, as its users call it), (b) this package's torch engine with the same `imagenet` table
(the like-for-like comparison) and (c) the torch engine with the `cifar` table (what a
CIFAR-10-C-style set uses). Prints images/s per corruption (all five severities), the overall
ratio, and the time of a full 15 x 5 x 10,000 CIFAR set, measured (--full) or extrapolated
from the sample (said which).

    .venv/bin/python benchmarks/corruptions.py --n 1000 --n-reference 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metabn_bench.config import CorruptConfig
from metabn_bench.corruptions import COMMON, reference_backend, tables
from metabn_bench.corruptions.generate import corrupt_dataset, corrupt_images, cpu_workers
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


def main() -> None:
    """Run the comparison and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images for the torch engine")
    ap.add_argument("--n-reference", type=int, default=200, help="images for imagecorruptions")
    ap.add_argument("--corruptions", default=",".join(COMMON))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
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
