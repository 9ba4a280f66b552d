"""Estimate what the paper-scale presets cost on one GPU, from counted FLOPs and CPU timings.

    .venv/bin/python benchmarks/preset_cost.py [--presets cifar10,cifar100,tinyimagenet]
        [--methods NAME,...] [--batch 32] [--steps 2] [--utilisation 0.1,0.3]

For each preset and method: the FLOPs of one training step (forward + backward, counted with
torch.utils.flop_counter on the real training step) and of each test-time protocol, the CPU
time of a few real steps on this machine, then the whole preset's FLOPs (epochs x training
images, plus every protocol x 76 cells x test images) divided by an assumed sustained GPU
throughput. The GPU hours are an ESTIMATE: networks this small (32-128 channels at 32x32,
64-512 at 64x64) spend much of a step in memory-bound BatchNorm, ReLU and small GEMMs, so
they sustain a small fraction of the tensor-core peak; that fraction is assumed (default 2%
and 10% of the H100's dense BF16 peak), not measured, and each assumption gets its own
column. The CPU columns are measured here.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from metabn_bench.analysis.cost import H100_BF16_DENSE_TFLOPS, estimate
from metabn_bench.config import load_preset
from metabn_bench.reporting.report import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="cifar10,cifar100,tinyimagenet")
    parser.add_argument("--methods", default="", help="default: each preset's methods")
    parser.add_argument("--batch", type=int, default=32, help="images per timed CPU step")
    parser.add_argument("--steps", type=int, default=2, help="timed CPU steps (after a warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--utilisation", default="0.02,0.1",
                        help="assumed sustained fractions of the H100 dense BF16 peak")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    fractions = [float(f) for f in args.utilisation.split(",")]
    import pandas as pd

    lines = []
    t_start = time.perf_counter()
    for name in args.presets.split(","):
        cfg = load_preset(name)
        methods = args.methods.split(",") if args.methods else list(cfg.methods)
        for method in methods:
            est = estimate(cfg, method, args.batch, args.steps)
            line = {
                "preset": name, "method": method, "arch": f"{est.arch} @{est.image_size}px",
                "train GFLOP/img": f"{est.step.flops_per_image / 1e9:.2f}",
                "CPU img/s": f"{1 / est.step.seconds_per_image:.1f}",
                "CPU GFLOP/s": f"{est.step.flops_per_image / est.step.seconds_per_image / 1e9:.0f}",
                "PFLOP/run": f"{(est.train_flops + est.eval_flops) / 1e15:.1f}",
                "runs": est.runs,
                "CPU days (train)": f"{est.cpu_days():.0f}",
            }
            for f in fractions:
                line[f"GPU h @{f:.0%}"] = f"{est.gpu_hours(f * H100_BF16_DENSE_TFLOPS):.2f}"
            lines.append(line)
    print(render(pd.DataFrame(lines), "markdown"))
    print(f"\nCPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, batch {args.batch}, {args.steps} timed steps; "
          f"torch {torch.__version__}; measured in {time.perf_counter() - t_start:.0f} s.")
    print("GPU h = (training + evaluation FLOPs of all runs) / (fraction x "
          f"{H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s, H100 SXM dense BF16 peak): an estimate under "
          "the stated fraction, not a measurement. FLOPs are those of convolutions and matrix "
          "products (FlopCounterMode); element-wise work is not counted.")


if __name__ == "__main__":
    main()
