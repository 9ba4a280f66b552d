"""The preset cost estimate: counted FLOPs agree with a count by hand of the layers."""

from __future__ import annotations

import torch
from torch import nn

from metabn_bench.analysis.cost import estimate, eval_flops_per_image, train_step_cost
from metabn_bench.config import load_preset
from metabn_bench.models import build_model
from tests.helpers import tiny_train_config


def _layer_flops(arch: str, size: int) -> float:
    """2 x multiply-adds of every convolution and linear layer, from their output shapes."""
    model = build_model(arch, 10).eval()
    total = 0.0

    def hook(module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2.0 * k * out.numel()
        elif isinstance(module, nn.Linear):
            total += 2.0 * module.in_features * out.numel()

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    return total


def test_flops_match_a_count_by_hand() -> None:
    cfg = tiny_train_config()
    forward = eval_flops_per_image(cfg, 10, 32, "none", batch=2)
    assert forward == _layer_flops("wrn10_1", 32)
    step = train_step_cost(cfg, 10, 32, batch=4, measure=False)
    assert 2.5 * forward < step.flops_per_image < 3.5 * forward  # forward + 2x backward
    # Tent back-propagates to the BatchNorm affine parameters: input gradients, no weight ones
    assert 1.5 * forward < eval_flops_per_image(cfg, 10, 32, "tent", batch=2) < 2.5 * forward


def test_a_preset_estimate_scales_with_epochs_and_images() -> None:
    cfg = load_preset("cifar10", ["train.arch=wrn10_1", "train.epochs=2"])
    est = estimate(cfg, "vanilla", measure_batch=4, measure=False)
    assert est.train_images == 2 * (50_000 // 128) * 128
    assert est.train_flops == est.train_images * est.step.flops_per_image
    assert est.gpu_hours(100.0) == est.runs * (est.train_flops + est.eval_flops) / 1e14 / 3600
