"""Split (auxiliary) BatchNorm (Merchant, Zoph & Cubuk 2020, "Does Data Augmentation Benefit
from Split BatchNorms").

Every BN layer holds a main and an auxiliary BatchNorm2d (own running statistics, own affine
parameters; the convolutions around them are shared). In a training forward the first `split`
samples of the batch go through the main BN and the rest through the auxiliary one; otherwise
every sample goes through the BN named by `route` ('main' or 'aux').
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metabn_bench.models.norms import NORMS, NormFactory

ROUTES = ("main", "aux")


class SplitBatchNorm2d(nn.Module):
    """A main and an auxiliary BatchNorm2d; samples are routed by position in the batch."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.main = nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
        self.aux = nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
        self.split: int | None = None  # leading samples routed to `main`; None = use `route`
        self.route = "main"

    def forward(self, x: Tensor) -> Tensor:
        if self.split is None:
            return (self.main if self.route == "main" else self.aux)(x)
        k = self.split
        return torch.cat([self.main(x[:k]), self.aux(x[k:])], dim=0)


@NORMS.register("split_bn")
def split_batch_norm(momentum: float = 0.1, eps: float = 1e-5) -> NormFactory:
    """SplitBatchNorm2d layers (main + auxiliary BN)."""

    def make(channels: int) -> nn.Module:
        return SplitBatchNorm2d(channels, eps=eps, momentum=momentum)

    return make


def split_layers(model: nn.Module) -> list[SplitBatchNorm2d]:
    """The model's split BN layers."""
    return [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]


def set_split(model: nn.Module, split: int | None) -> None:
    """Route the first `split` samples of the next forwards to the main BNs (None: by route)."""
    for m in split_layers(model):
        m.split = split


def set_route(model: nn.Module, route: str) -> None:
    """Send every sample through the main or the auxiliary BNs (when no split is set)."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    for m in split_layers(model):
        m.route = route
