"""Noise corruptions (Hendrycks & Dietterich 2019), batched, one random stream per image."""

from __future__ import annotations

import torch
from torch import Tensor

from metabn_bench.corruptions.registry import clip255, corruption
from metabn_bench.corruptions.rng import ImageRandom


@corruption("gaussian_noise", random=True)
def gaussian_noise(x: Tensor, std: float, rng: ImageRandom) -> Tensor:
    """x + N(0, std^2) per value, clipped."""
    return clip255(x + rng.normal(*x.shape[1:]) * std)


@corruption("shot_noise", random=True)
def shot_noise(x: Tensor, photons: float, rng: ImageRandom) -> Tensor:
    """Poisson(x * c) / c per value (c photons at full intensity), clipped."""
    counts = rng.poisson(x * photons)
    return clip255(counts.to(x.dtype) / photons)


@corruption("impulse_noise", random=True)
def impulse_noise(x: Tensor, amount: float, rng: ImageRandom) -> Tensor:
    """Salt and pepper as scikit-image's random_noise('s&p'): each value is replaced with
    probability `amount`, by 1 or 0 with equal odds."""
    draws = rng.uniform(2, *x.shape[1:])
    flipped = draws[:, 0] < amount
    salt = draws[:, 1] < 0.5
    out = torch.where(flipped & salt, torch.ones_like(x), x)
    out = torch.where(flipped & ~salt, torch.zeros_like(x), out)
    return clip255(out)


@corruption("speckle_noise", random=True)
def speckle_noise(x: Tensor, std: float, rng: ImageRandom) -> Tensor:
    """x + x * N(0, std^2) per value, clipped."""
    return clip255(x + x * rng.normal(*x.shape[1:]) * std)
