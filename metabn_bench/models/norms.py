"""Norm-layer factories: every architecture takes its normalisation from here.

A NormFactory maps a channel count to a module that behaves like BatchNorm2d (same input and
output). A UnitFactory makes an extra module that an architecture inserts in each residual
block (at the block's input, 'pre', or after the residual sum, 'post'); SelfNorm/CrossNorm use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
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


class InstanceEnhancedBN(nn.BatchNorm2d):
    """Instance Enhancement BN (Liang et al., AAAI 2020): y = x_hat * gamma * g + beta, with x_hat
    BatchNorm's standardised input and g = sigmoid(w * mean_hw(x_hat) + b) a per-sample,
    per-channel gate from a per-channel linear transform (w, b) of the sample's pooled features.

    A BatchNorm2d subclass: the `bn` protocol sets its statistics and `tent` adapts gamma and beta
    (the gate's w and b stay as trained). Pooling x_hat rather than x, and the initial w and b,
    are our choices (options of the factory).
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1,
                 gate_weight: float = 0.0, gate_bias: float = -1.0) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        self.gate_weight_init, self.gate_bias_init = gate_weight, gate_bias
        self.gate_weight = nn.Parameter(torch.full((channels,), gate_weight))
        self.gate_bias = nn.Parameter(torch.full((channels,), gate_bias))

    def reset_norm_parameters(self) -> None:
        """Unit gamma, zero beta and the gate's initial transform (called by init_weights)."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()
            self.gate_weight.fill_(self.gate_weight_init)
            self.gate_bias.fill_(self.gate_bias_init)

    def forward(self, x: Tensor) -> Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        x_hat = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training,
                             factor, self.eps)
        pooled = x_hat.mean(dim=(2, 3))
        gate = torch.sigmoid(self.gate_weight * pooled + self.gate_bias)
        scale = self.weight * gate
        return x_hat * scale[:, :, None, None] + self.bias.view(1, -1, 1, 1)


@NORMS.register("iebn")
def instance_enhanced_bn(gate_weight: float = 0.0, gate_bias: float = -1.0,
                         momentum: float = 0.1, eps: float = 1e-5) -> NormFactory:
    """IEBN layers whose gate starts at sigmoid(gate_weight * pooled + gate_bias)."""

    def make(channels: int) -> nn.Module:
        return InstanceEnhancedBN(channels, eps, momentum, gate_weight, gate_bias)

    return make
