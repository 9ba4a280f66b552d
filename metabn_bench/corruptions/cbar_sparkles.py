"""CIFAR-10-C-bar's sparkles and inverse sparkles, batched, one random stream per image.

Mintun, Kirillov & Xie (NeurIPS 2021); formulas of the official generator
(facebookresearch/augmentation-corruption, imagenet_c_bar/corrupt.py). A star of rays around a
centre: ray lengths vary around a radius, the weight of a pixel falls with its distance relative
to the (interpolated) length of its ray. Sparkles blend five white stars over the image;
inverse sparkles keep the image inside one star and whiten it outside.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metabn_bench.corruptions.cbar_noise import pixel_grid, scaled
from metabn_bench.corruptions.registry import corruption
from metabn_bench.corruptions.rng import ImageRandom

MAX_RAYS = 199  # ray counts are uniform integers in [50, 200)
STARS = 5  # sparkles per image
RANDOMNESS = 25  # ray length std, % of the radius


def star_weight(row: Tensor, col: Tensor, centre: Tensor, lengths: Tensor, rays: Tensor,
                exponent: float) -> Tensor:
    """The reference's per-pixel weight f in [0, 1] of one star, batched: (B, S, S).

    centre (B, 2) as (row, column); lengths (B, MAX_RAYS), of which the first `rays` (B,) count.
    The pixel's angle picks a ray and the fraction towards the next; the length between them is
    interpolated, g = (length^2 / (distance^2 + 1e-4)) ^ exponent, f = (1 - (frac - 0.5)^2) * g.
    """
    dr = row - centre[:, 0, None, None]
    dc = col - centre[:, 1, None, None]
    dist = torch.sqrt(dr * dr + dc * dc)
    n = rays[:, None, None].to(torch.float64)
    d = (torch.atan2(dc, dr) + math.pi) / (2 * math.pi) * n
    i = torch.trunc(d)
    frac = d - i
    idx = torch.remainder(i.to(torch.long), rays[:, None, None])
    nxt = torch.remainder(idx + 1, rays[:, None, None])
    first = torch.gather(lengths, 1, idx.flatten(1)).view_as(d)
    second = torch.gather(lengths, 1, nxt.flatten(1)).view_as(d)
    length = first + frac * (second - first)
    g = (length * length) / (dist * dist + 1e-4)
    if exponent != 1.0:
        g = g ** exponent
    return ((1 - (frac - 0.5) ** 2) * g).clamp(0, 1)


def draw_sparkles(rng: ImageRandom, level: float, size: int) -> dict[str, Tensor]:
    """Five centres (uniform in the image), ray counts and ray lengths (at least 1 pixel)."""
    radius = scaled(level, 0.1) * size
    centres = rng.uniform(STARS, 2, dtype=torch.float64) * size
    rays = rng.randint(50, 200, STARS)
    noise = rng.normal(STARS, MAX_RAYS, dtype=torch.float64)
    lengths = torch.clamp_min(radius + RANDOMNESS / 100.0 * radius * noise, 1.0)
    return {"centres": centres, "rays": rays.to(centres.device), "lengths": lengths}


@corruption("sparkles", random=True)
def sparkles(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """Five white stars of radius (0.1 * level / 10) * S blended one after another: x + f (255 -
    x), with the image rounded to float32 before each star as in the reference. Levels are
    positive (every table entry is); the reference's zero-radius branch is not reproduced."""
    size = x.shape[-1]
    d = draw_sparkles(rng, level, size)
    row, col = pixel_grid(size, x.device)
    out = x * 255
    for k in range(STARS):
        value = out.to(torch.float32).to(torch.float64)
        f = star_weight(row, col, d["centres"][:, k], d["lengths"][:, k], d["rays"][:, k], 1.0)
        out = value + f.unsqueeze(1) * (255 - value)
    return out.clamp(0, 255)


def draw_inverse_sparkles(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """One centre (uniform in the middle half of each axis), a ray count and ray lengths."""
    radius = 0.25 * size
    centre = (0.25 + 0.5 * rng.uniform(2, dtype=torch.float64)) * size
    rays = rng.randint(50, 200)
    lengths = radius + RANDOMNESS / 100.0 * radius * rng.normal(MAX_RAYS, dtype=torch.float64)
    return {"centre": centre, "rays": rays.to(centre.device), "lengths": lengths}


@corruption("inverse_sparkles", random=True)
def inverse_sparkles(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """White outside one star of radius S / 4: 255 + f (x - 255), the weight's exponent being
    (100 - amount) / 50 with amount = 100 - 65 * level / 10 (a harder falloff at higher level)."""
    size = x.shape[-1]
    d = draw_inverse_sparkles(rng, size)
    row, col = pixel_grid(size, x.device)
    amount = 100 - scaled(level, 65)
    f = star_weight(row, col, d["centre"], d["lengths"], d["rays"], (100 - amount) / 50.0)
    return (255 + f.unsqueeze(1) * (x * 255 - 255)).clamp(0, 255)
