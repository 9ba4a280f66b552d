"""CrossNorm and SelfNorm units (Tang et al., ICCV 2021, "CrossNorm and SelfNorm for
Generalization under Distribution Shifts").

- SelfNorm recalibrates each channel of each sample by a gate computed from that sample's own
  channel mean and standard deviation; it acts at training and test time.
- CrossNorm replaces a sample's channel statistics with those of another sample of the batch
  (the "2-instance" mode of the official code); it acts only in training, and only in the units
  that the method switches on for one forward pass (`CNSNUnit.active`).
Both go into an architecture as a per-block unit (models/norms.py UnitFactory) at the block
input ('pre') or output ('post').
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

CROPS = ("neither", "style", "content", "both")


def instance_mean_std(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and std (unbiased variance + eps) of (N, C, H, W), as (N, C, 1, 1).

    Computed in float32 so that the unit is safe under autocast.
    """
    flat = x.float().flatten(2)
    var = flat.var(dim=2) + eps
    return flat.mean(dim=2)[..., None, None], var.sqrt()[..., None, None]


class SelfNorm(nn.Module):
    """x * sigmoid(BN1d(grouped 2->1 linear map of (mean_c, std_c))), per sample and channel.

    The linear map is a Conv1d with one group per channel and no bias, as in the official code;
    the instance variance gets eps 1e-12.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate_fc = nn.Conv1d(channels, channels, kernel_size=2, groups=channels, bias=False)
        self.gate_bn = nn.BatchNorm1d(channels)

    def gate(self, x: Tensor) -> Tensor:
        """The (N, C) gate in (0, 1)."""
        mean, std = instance_mean_std(x, eps=1e-12)
        stats = torch.cat([mean.flatten(2), std.flatten(2)], dim=2)  # (N, C, 2)
        z = self.gate_bn(self.gate_fc(stats.to(self.gate_fc.weight.dtype)))  # (N, C, 1)
        return torch.sigmoid(z.squeeze(2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x).to(x.dtype)[..., None, None]


@dataclass(frozen=True)
class CrossNormConfig:
    """How CrossNorm crops: which of content/style uses a random box, and the box's area law."""

    crop: str = "neither"  # neither | style | content | both
    beta: float = 1.0  # box area ratio ~ Beta(beta, beta), redrawn until >= min_area
    min_area: float = 0.1  # smallest box, as a fraction of the feature map's area


def random_box(height: int, width: int, beta: float, min_area: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box with area ratio ~ Beta(beta, beta) and a uniform
    centre, clipped to the map; redrawn until its clipped area is at least `min_area`.

    Draws from torch's global CPU RNG (seeded per epoch by the training loop).
    """
    dist = torch.distributions.Beta(torch.tensor(float(beta)), torch.tensor(float(beta)))
    for _ in range(1000):
        side = math.sqrt(float(dist.sample()))
        cut_h, cut_w = int(height * side), int(width * side)
        cy, cx = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        if (bottom - top) * (right - left) >= min_area * height * width:
            return top, bottom, left, right
    return 0, height, 0, width  # unreachable in practice (P(area >= 10%) is about 0.5 per draw)


def restyle(content: Tensor, style: Tensor) -> Tensor:
    """Content normalised with its instance statistics, rescaled with the style's."""
    c_mean, c_std = instance_mean_std(content)
    s_mean, s_std = instance_mean_std(style)
    out = (content.float() - c_mean) / c_std * s_std + s_mean
    return out.to(content.dtype)


def cross_norm(x: Tensor, cfg: CrossNormConfig) -> Tensor:
    """CrossNorm, 2-instance mode: each sample takes the statistics of x[randperm(N)].

    With crop 'style' the style statistics come from a random box of the partner; with
    'content' only a random box of the sample is restyled; 'both' does both.
    """
    n, _, h, w = x.shape
    partner = torch.randperm(n, device=x.device)
    style = x[partner]
    if cfg.crop in ("style", "both"):
        top, bottom, left, right = random_box(h, w, cfg.beta, cfg.min_area)
        style = style[:, :, top:bottom, left:right]
    if cfg.crop in ("content", "both"):
        top, bottom, left, right = random_box(h, w, cfg.beta, cfg.min_area)
        out = x.clone()
        out[:, :, top:bottom, left:right] = restyle(x[:, :, top:bottom, left:right], style)
        return out
    return restyle(x, style)


class CNSNUnit(nn.Module):
    """CrossNorm (when configured and switched on for this forward) then SelfNorm (when configured).

    `active` is set by the method before a training forward and cleared by the forward itself,
    so CrossNorm acts in exactly one forward pass; it never acts in eval mode.
    """

    def __init__(self, channels: int, crossnorm: CrossNormConfig | None, selfnorm: bool) -> None:
        super().__init__()
        self.crossnorm = crossnorm
        self.selfnorm = SelfNorm(channels) if selfnorm else None
        self.active = False

    def forward(self, x: Tensor) -> Tensor:
        if self.crossnorm is not None and self.active and self.training:
            x = cross_norm(x, self.crossnorm)
        self.active = False
        return self.selfnorm(x) if self.selfnorm is not None else x


def cnsn_units(model: nn.Module) -> list[CNSNUnit]:
    """The model's CNSN units in module order."""
    return [m for m in model.modules() if isinstance(m, CNSNUnit)]


def activate_crossnorm(units: Sequence[CNSNUnit], count: int) -> list[int]:
    """Switch CrossNorm on in `count` units chosen uniformly without replacement (global RNG)."""
    chosen = torch.randperm(len(units))[:count].tolist()
    for i in chosen:
        units[i].active = True
    return chosen
