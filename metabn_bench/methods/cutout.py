"""Cutout (DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural Networks
with Cutout"): one square hole per image, filled with zero after normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method
from metabn_bench.methods.registry import METHODS


@dataclass(frozen=True)
class CutoutHparams:
    """Cutout's options (the CIFAR-10 default; CIFAR-100 presets set size 8)."""

    size: int = 16  # side of the square hole, pixels

    def __post_init__(self) -> None:
        if self.size < 1:
            raise UserError(f"hparams.size must be a positive number of pixels, got {self.size}")


def cutout(x: Tensor, size: int, fill: Tensor) -> Tensor:
    """Per image, a size x size hole with a uniform centre, clipped at the border, set to `fill`.

    As the reference: centre (cy, cx) uniform over the pixels, rows cy - size // 2 to
    cy + size // 2 (exclusive), clipped. Draws from torch's global RNG on x's device.
    """
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    hole = ((rows >= cy - size // 2) & (rows < cy + size // 2)
            & (cols >= cx - size // 2) & (cols < cx + size // 2))
    return torch.where(hole, fill.to(x.dtype), x)


@METHODS.register("cutout")
class Cutout(Method[CutoutHparams]):
    """Cutout: a random square hole per training image (DeVries & Taylor 2017).

    The hole is filled with the normalisation mean in [0, 1] space, i.e. zero after
    normalisation, as in the reference (which cuts the normalised tensor).
    torchvision.transforms.v2.RandomErasing is not used: its boxes have random area and aspect.
    """

    Hparams = CutoutHparams
    description = "one square hole per image (16 px on CIFAR-10, 8 on CIFAR-100)"

    def batch_transform(self, batch: Batch) -> Batch:
        return Batch(cutout(batch.x, self.hp.size, self.mean), batch.y, batch.extra)
