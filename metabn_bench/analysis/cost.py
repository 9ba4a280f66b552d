"""What a preset costs: FLOPs counted per image, step times measured, GPU hours estimated.

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on the real code paths (one
training step of the method, forward and backward; one evaluation batch of each test-time
protocol), so a method that runs extra views or a protocol that back-propagates (Tent) is
counted as it runs. Seconds are measured on this machine's CPU. The GPU figure is an
estimate: counted FLOPs divided by an assumed sustained throughput, stated with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from metabn_bench.config import SuiteConfig, TrainConfig, replace
from metabn_bench.corruptions import names as cnames
from metabn_bench.data.augment import crop_flip
from metabn_bench.data.loader import to_float
from metabn_bench.methods import Batch, build_method
from metabn_bench.training.step import train_step

# Sizes of the data sets the paper presets name (train images, test images, classes, pixels).
DATASET_SIZES = {"cifar10": (50_000, 10_000, 10, 32), "cifar100": (50_000, 10_000, 100, 32),
                 "tinyimagenet": (100_000, 10_000, 200, 64)}
# NVIDIA H100 SXM dense BF16 tensor-core peak, TFLOP/s (data sheet; 2x with sparsity).
H100_BF16_DENSE_TFLOPS = 989.0


@dataclass
class StepCost:
    """One training step of a method at an architecture: FLOPs counted, seconds measured."""

    flops_per_image: float  # forward + backward, counted
    seconds_per_image: float  # measured on this CPU (0 when not measured)


def _flops(fn: Callable[[], None]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def _images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


def train_step_cost(cfg: TrainConfig, num_classes: int, image_size: int, batch: int,
                    steps: int = 2, measure: bool = True) -> StepCost:
    """Count one training step's FLOPs; time `steps` steps (after one warm-up) on the CPU."""
    device = torch.device("cpu")
    method = build_method(cfg, num_classes, device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = method.build_model().to(device, memory_format=fmt)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, num_classes, (batch,), generator=gen)

    def step() -> None:
        x = crop_flip(to_float(_images(batch, image_size, gen), fmt), cfg.data.crop_padding,
                      cfg.data.hflip, gen)
        train_step(method, model, Batch(x, labels), opt)

    flops = _flops(step)
    seconds = 0.0
    if measure:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = (time.perf_counter() - t0) / (steps * batch)
    return StepCost(flops / batch, seconds)


def eval_flops_per_image(cfg: TrainConfig, num_classes: int, image_size: int, protocol: str,
                         batch: int = 16) -> float:
    """FLOPs per test image of one protocol (forward only, or Tent's forward + update)."""
    from metabn_bench.evaluation.protocols import make_protocol

    device = torch.device("cpu")
    method = build_method(cfg, num_classes, device)
    model = method.build_model().to(device)
    method.prepare_eval(model)
    proto = make_protocol(protocol, model, lambda x: model(method.normalize(x)))
    x = to_float(_images(batch, image_size, torch.Generator().manual_seed(1)))
    proto.reset()
    return _flops(lambda: proto.predict(x)) / batch


@dataclass
class PresetEstimate:
    """A preset's counted work per run and its estimated GPU time."""

    preset: str
    method: str
    arch: str
    image_size: int
    step: StepCost
    train_images: int  # per run: epochs x full batches x batch size
    train_flops: float  # per run
    eval_flops: float  # per run, all protocols and cells
    runs: int  # seeds of this method

    def gpu_hours(self, tflops: float) -> float:
        """Hours for all runs of this method at a sustained `tflops` TFLOP/s."""
        return self.runs * (self.train_flops + self.eval_flops) / (tflops * 1e12) / 3600

    def cpu_days(self) -> float:
        """Days of this machine's CPU for all runs' training at the measured rate."""
        return self.runs * self.train_images * self.step.seconds_per_image / 86400


def estimate(cfg: SuiteConfig, method: str, measure_batch: int = 32, steps: int = 2,
             measure: bool = True) -> PresetEstimate:
    """Count and measure one method of a paper-scale preset (data set sizes: DATASET_SIZES)."""
    dataset = cfg.train.data.dataset
    if dataset not in DATASET_SIZES:
        raise ValueError(f"no size known for data set '{dataset}'; known: {sorted(DATASET_SIZES)}")
    n_train, n_test, classes, size = DATASET_SIZES[dataset]
    tcfg = replace(cfg.train, method=method, device="cpu",
                   hparams=dict(cfg.method_hparams.get(method, {})))
    step = train_step_cost(tcfg, classes, size, measure_batch, steps, measure)
    batch = tcfg.optim.batch_size
    n_used = cfg.train.data.train_size or n_train
    train_images = tcfg.epochs * (n_used // batch) * batch
    n_eval = cfg.corrupt.n_test or n_test
    cells = 1 + len(cnames.COMMON) * len(cfg.corrupt.severities)
    eval_flops = sum(eval_flops_per_image(tcfg, classes, size, p) for p in cfg.eval.protocols)
    return PresetEstimate(cfg.name, method, tcfg.arch, size, step, train_images,
                          train_images * step.flops_per_image, eval_flops * n_eval * cells,
                          len(cfg.seeds_for(method)))
