"""The corruption registry: name -> batched op.

An op takes a float64 batch (B, 3, H, W) in [0, 1] on any device (`as_input`; float64 because
the reference computes in double precision and truncates, so float32 would move values across
integer boundaries), the severity's parameters from the size preset's table, and an
ImageRandom; it returns the corrupted batch in the reference's 0..255 float scale, before the
reference's truncation to uint8 (`to_uint8`). Ops whose reference works in float32 cast to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metabn_bench.corruptions.names import KNOWN, group_of
from metabn_bench.corruptions.rng import ImageRandom
from metabn_bench.errors import UserError
from metabn_bench.registry import Registry

Op = Callable[[Tensor, Any, ImageRandom], Tensor]


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: its op and whether it draws random numbers."""

    name: str
    op: Op
    random: bool

    @property
    def group(self) -> str:
        """noise, blur, weather, digital or extra."""
        return group_of(self.name)


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def corruption(name: str, random: bool) -> Callable[[Op], Op]:
    """Decorator registering a batched op under one of the 19 -C or 15 -C-bar names."""
    if name not in KNOWN:
        raise ValueError(f"'{name}' is not a reference corruption name")

    def deco(op: Op) -> Op:
        CORRUPTIONS.add(name, Corruption(name, op, random))
        return op

    return deco


def get(name: str) -> Corruption:
    """The registered corruption `name`; a UserError naming what is valid otherwise."""
    if name in KNOWN and name not in CORRUPTIONS:
        raise UserError(f"corruption '{name}' is not implemented yet; implemented: "
                        f"{', '.join(CORRUPTIONS.names())}")
    return CORRUPTIONS.get(name)


def as_input(images: Tensor) -> Tensor:
    """uint8 NHWC (or NCHW when `images.shape[1] == 3` and the last axis is not) -> float64 NCHW
    in [0, 1], the reference's np.array(image) / 255."""
    if images.shape[-1] != 3 and images.shape[1] == 3:
        images = images.permute(0, 2, 3, 1)
    # Contiguous NCHW float64 (float ops on channels-last views are slower), converted and
    # transposed in one copy: measured 1.8x faster than a uint8 transpose, then the conversion.
    b, h, w, c = images.shape
    out = torch.empty((b, c, h, w), dtype=torch.float64, device=images.device)
    return out.copy_(images.permute(0, 3, 1, 2)).div_(255.0)


def to_uint8(x: Tensor) -> Tensor:
    """Reference conversion: clip to 0..255 and truncate (np.uint8 of a float array)."""
    # In place (ops return fresh tensors); the cast truncates, values being >= 0 here.
    return x.clamp_(0, 255).to(torch.uint8)


def clip255(x: Tensor) -> Tensor:
    """np.clip(x, 0, 1) * 255, the last line of most reference corruptions."""
    return x.clamp(0, 1) * 255
