"""Noise corruptions (Hendrycks & Dietterich 2019), batched."""

from __future__ import annotations

from torch import Tensor

from metabn_bench.corruptions.registry import clip255, corruption
from metabn_bench.corruptions.rng import ImageRandom


@corruption("gaussian_noise", random=True)
def gaussian_noise(x: Tensor, std: float, rng: ImageRandom) -> Tensor:
    """x + N(0, std^2) per value, clipped."""
    return clip255(x + rng.normal(*x.shape[1:]) * std)
