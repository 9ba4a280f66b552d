"""Norm-layer factories: every architecture takes its normalisation from here.

A NormFactory maps a channel count to a module that behaves like BatchNorm2d (same input and
output). A UnitFactory makes an extra module that an architecture inserts in each residual
block (at the block's input, 'pre', or after the residual sum, 'post'); SelfNorm/CrossNorm use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from metabn_bench.registry import Registry

NormFactory = Callable[[int], nn.Module]
UnitFactory = Callable[[int], nn.Module]
UNIT_POSITIONS = ("pre", "post")

NORMS: Registry[Callable[..., NormFactory]] = Registry("norm layer")


@NORMS.register("bn")
def batch_norm(momentum: float = 0.1, eps: float = 1e-5) -> NormFactory:
    """Plain BatchNorm2d (Ioffe & Szegedy 2015)."""

    def make(channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)

    return make


def make_norm(kind: str = "bn", **options: object) -> NormFactory:
    """The factory registered as `kind`, configured with `options`."""
    return NORMS.get(kind)(**options)


@NORMS.register("gn")
def group_norm(groups: int = 32, eps: float = 1e-5) -> NormFactory:
    """GroupNorm (Wu & He, ECCV 2018): per-sample statistics over groups of C/G channels.

    The paper uses G = 32; a layer whose channel count G does not divide gets gcd(G, C) groups
    (our choice: WRN-10-1's 16-channel stage then has 16 groups of one channel).
    """

    def make(channels: int) -> nn.Module:
        return nn.GroupNorm(math.gcd(groups, channels), channels, eps=eps)

    return make


class IBN(nn.Module):
    """IBN-Net-a's norm layer (Pan et al., ECCV 2018): InstanceNorm (affine) on the first
    `round(ratio * C)` channels, BatchNorm2d on the rest; the BN half is the submodule `bn`,
    so the test-time protocols adapt it."""

    def __init__(self, channels: int, ratio: float = 0.5, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.split = max(1, min(channels - 1, round(ratio * channels)))
        self.inorm = nn.InstanceNorm2d(self.split, eps=eps, affine=True)
        self.bn = nn.BatchNorm2d(channels - self.split, eps=eps, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        head, tail = x[:, :self.split], x[:, self.split:]
        return torch.cat([self.inorm(head.contiguous()), self.bn(tail.contiguous())], dim=1)


@NORMS.register("ibn")
def ibn_norm(ratio: float = 0.5, momentum: float = 0.1, eps: float = 1e-5) -> NormFactory:
    """IBN layers (IN on `ratio` of the channels, BN on the rest) for every layer it builds."""

    def make(channels: int) -> nn.Module:
        return IBN(channels, ratio, eps, momentum)

    return make


class BatchGroupNorm(nn.Module):
    """Batch Group Normalization (Zhou et al., arXiv 2020): the C channels form G
    groups, each normalised with the mean and variance over (N, C/G, H, W), then a per-channel
    scale and shift as in BN. G = C is BatchNorm; G = 1 normalises the whole batch jointly.

    The statistics come from an affine-free BatchNorm2d over G channels applied to the
    (N, G, C/G * H, W) view, so training uses batch statistics, evaluation the running ones,
    and the `bn` and `tent` protocols adapt the per-group statistics like any BatchNorm.
    """

    def __init__(self, channels: int, groups: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.groups = math.gcd(groups, channels)
        self.bn = nn.BatchNorm2d(self.groups, eps=eps, momentum=momentum, affine=False)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        y = self.bn(x.reshape(n, self.groups, (c // self.groups) * h, w)).reshape(n, c, h, w)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def affine_parameters(self) -> list[nn.Parameter]:
        """The per-channel scale and shift (what Tent adapts)."""
        return [self.weight, self.bias]


@NORMS.register("bgn")
def batch_group_norm(groups: int = 16, momentum: float = 0.1, eps: float = 1e-5) -> NormFactory:
    """BGN layers with G = gcd(`groups`, C) groups per layer (our choice where G does not divide C)."""

    def make(channels: int) -> nn.Module:
        return BatchGroupNorm(channels, groups, eps, momentum)

    return make
