"""ImageNet-C-bar's caustic_refraction, batched, one random stream per image.

Mintun, Kirillov & Xie (NeurIPS 2021); the formulas of the official generator
(facebookresearch/augmentation-corruption, imagenet_c_bar/corrupt.py): a caustic pattern (an
iterated trigonometric map, as water makes on a pool floor) is softened by a Gaussian and read
as the height of a lens; each pixel samples the image where a vertical ray leaves that lens
(Snell's law, index 4) and is lit by the pattern's slope. Float64 throughout, the image read in
float32 as the reference reads it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metabn_bench.corruptions.cbar_noise import pixel_grid, scaled
from metabn_bench.corruptions.cbar_warp import bilinear_zero
from metabn_bench.corruptions.filters import gaussian_filter
from metabn_bench.corruptions.registry import corruption
from metabn_bench.corruptions.rng import ImageRandom

ETA = 4.0  # the lens's refractive index
TWO_PI = 6.28318530718  # the reference's literal
LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709 weights of the reference's luma


def draw_caustic_refraction(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """Per image: the pattern's time (0.5-2) and period (0.75-1.25 S)."""
    u = rng.uniform(2, dtype=torch.float64)
    return {"time": 0.5 + 1.5 * u[:, 0], "period": (0.75 + 0.5 * u[:, 1]) * size}


def caustic_pattern(size: int, time: Tensor, period: Tensor) -> Tensor:
    """The reference's caustic noise at every pixel, (B, S, S) in [0, 1]: p = frac(pixel /
    period) 2 pi - 250, five steps of the map i <- p + (cos(t - i0) + sin(t + i1), sin(t - i1)
    + cos(t + i0)) with t = time (1 - 3.5 / n), c = 1 + sum 1 / |p / (sin(i0 + t), cos(i1 + t)) *
    0.005|, then |1.17 - (c / 5)^1.4|^8."""
    row, col = pixel_grid(size, time.device)
    per = period[:, None, None]
    # exact fmod, as NumPy's `% 1` of these non-negative coordinates
    p0 = torch.fmod(row / per, 1.0) * TWO_PI - 250
    p1 = torch.fmod(col / per, 1.0) * TWO_PI - 250
    i0, i1 = p0, p1
    c = torch.ones_like(p0)
    inten = 0.005
    for n in range(5):
        t = time[:, None, None] * (1.0 - (3.5 / (n + 1)))
        i0, i1 = (p0 + (torch.cos(t - i0) + torch.sin(t + i1)),
                  p1 + (torch.sin(t - i1) + torch.cos(t + i0)))
        a = p0 / (torch.sin(i0 + t) / inten)
        b = p1 / (torch.cos(i1 + t) / inten)
        c = c + 1.0 / torch.sqrt(a * a + b * b)
    c = 1.17 - (c / 5.0) ** 1.4
    return (c.abs() ** 8.0).clamp(0, 1)


def _shifted(m: Tensor, dr: int, dc: int) -> Tensor:
    """m[r + dr, c + dc] at every (r, c), 0 outside the map (the reference's zero pixel)."""
    out = torch.zeros_like(m)
    s = m.shape[-1]
    rows_out = slice(max(0, -dr), s - max(0, dr))
    cols_out = slice(max(0, -dc), s - max(0, dc))
    rows_in = slice(max(0, dr), s - max(0, -dr))
    cols_in = slice(max(0, dc), s - max(0, -dc))
    out[:, rows_out, cols_out] = m[:, rows_in, cols_in]
    return out


def _luma(m: Tensor) -> Tensor:
    """The reference's dot product of a grey pixel (m, m, m) with the luma weights."""
    return m * LUMA[0] + m * LUMA[1] + m * LUMA[2]


@corruption("caustic_refraction", random=True)
def caustic_refraction(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """Refraction through a caustic lens: the pattern, Gaussian-softened (sigma 1, SciPy's
    `reflect` border), gives the normal n = (east - west, south - north, 1) / norm from its
    neighbours' luma (0 outside the image; the reference's north/south are the column
    neighbours); the vertical ray refracts into round(lens_scale (cos b n + sin b o), 3), b =
    asin(sin(acos n_z) / 4), o the unit vector in the tilt plane perpendicular to n (no shift
    where n_z >= 0.999); the pixel samples the image there bilinearly (0 outside) and adds
    lighting x ((north - south) + (east - west)). lens_scale = 0.5 S level / 10, lighting
    2 level / 10."""
    size = x.shape[-1]
    d = draw_caustic_refraction(rng, size)
    pattern = caustic_pattern(size, d["time"].to(x.device), d["period"].to(x.device))
    pattern = gaussian_filter(pattern.unsqueeze(1), 1.0, mode="symmetric")[:, 0]
    north, south = _luma(_shifted(pattern, 0, -1)), _luma(_shifted(pattern, 0, 1))
    west, east = _luma(_shifted(pattern, -1, 0)), _luma(_shifted(pattern, 1, 0))
    nx, ny = east - west, south - north
    norm = torch.sqrt(nx * nx + ny * ny + 1.0)
    nx, ny, nz = nx / norm, ny / norm, 1.0 / norm
    straight = nz.abs() >= 1.0 - 1e-3
    bent = torch.asin(torch.sin(torch.acos(nz)) / ETA)
    tilt = torch.sqrt(nx * nx + ny * ny)
    tilt = torch.where(straight, 1.0, tilt)  # avoids 0 / 0 where the ray goes straight
    # the refracted direction's first two components: cos b * n + sin b * (normal x spectator)
    along = torch.sin(bent) * nz / tilt
    lens_scale = scaled(level, 0.5 * size)
    shift_r = torch.cos(bent) * nx - along * nx
    shift_c = torch.cos(bent) * ny - along * ny
    shift_r = torch.where(straight, 0.0, torch.round(shift_r * lens_scale * 1000) / 1000)
    shift_c = torch.where(straight, 0.0, torch.round(shift_c * lens_scale * 1000) / 1000)
    row, col = pixel_grid(size, x.device)
    image = (x * 255).to(torch.float32).div_(255).to(torch.float64)
    out = bilinear_zero(image, row + shift_r, col + shift_c)
    light = scaled(level, 2.0)
    out = out + ((north - south) * light).unsqueeze(1)
    out = out + ((east - west) * light).unsqueeze(1)
    return out.clamp(0, 1) * 255

