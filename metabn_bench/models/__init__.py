"""The model registry: architectures that take a norm layer (and optional per-block unit)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from metabn_bench.models import (
    cross_iteration_bn,  # noqa: F401  (registers the cbn norm)
    domain_bn,  # noqa: F401  (registers the domain_bn norm)
    memorized_bn,  # noqa: F401  (registers the mbn norm)
    metabn,  # noqa: F401  (registers the 'metabn' norm layer)
    proxy_norm,  # noqa: F401  (registers the proxy_norm norm)
    split_bn,  # noqa: F401  (registers the split_bn norm)
)
from metabn_bench.models.common import Classifier
from metabn_bench.models.norms import NormFactory, UnitFactory, make_norm
from metabn_bench.models.resnet import BasicBlock, PreActBlock, ResNet
from metabn_bench.models.resnet9 import ResNet9
from metabn_bench.models.wrn import WideResNet
from metabn_bench.registry import Registry

Builder = Callable[[int, NormFactory, "UnitFactory | None", str], Classifier]


@dataclass(frozen=True)
class Arch:
    """A registered architecture and a one-line description."""

    build: Builder
    description: str


ARCHS: Registry[Arch] = Registry("architecture")

ARCHS.add("wrn40_2", Arch(lambda k, n, u, p: WideResNet(40, 2, k, n, u, p),
                          "WRN-40-2, pre-activation (the AugMix / CNSN CIFAR recipe), 2.2M params"))
ARCHS.add("resnet18", Arch(lambda k, n, u, p: ResNet(BasicBlock, (2, 2, 2, 2), k, n, u, p),
                           "CIFAR ResNet-18 (3x3 stem, no max-pool), 11M params"))
ARCHS.add("preact_resnet18", Arch(lambda k, n, u, p: ResNet(PreActBlock, (2, 2, 2, 2), k, n, u, p),
                                  "PreAct ResNet-18 (3x3 stem; Tiny-ImageNet at 64px), 11M params"))
ARCHS.add("wrn16_2", Arch(lambda k, n, u, p: WideResNet(16, 2, k, n, u, p),
                          "WRN-16-2, the recipe's network at a third of the depth, 0.7M params"))
ARCHS.add("wrn10_1", Arch(lambda k, n, u, p: WideResNet(10, 1, k, n, u, p),
                          "WRN-10-1, a small fast network for CPU runs, 77k params"))
ARCHS.add("resnet9_16", Arch(lambda k, n, u, p: ResNet9(k, n, u, p, width=16),
                             "ResNet-9 (Page 2018) at base width 16: the fast CPU recipe, 0.41M params"))
ARCHS.add("resnet9", Arch(lambda k, n, u, p: ResNet9(k, n, u, p, width=64),
                          "ResNet-9 (Page 2018), base width 64: the fast GPU recipe, 6.6M params"))


def build_model(arch: str, num_classes: int, norm: NormFactory | None = None,
                unit: UnitFactory | None = None, unit_position: str = "post") -> Classifier:
    """Build architecture `arch` with `norm` (default BatchNorm2d) and an optional unit."""
    entry = ARCHS.get(arch)
    return entry.build(num_classes, norm or make_norm("bn"), unit, unit_position)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["ARCHS", "Classifier", "build_model", "count_parameters"]
