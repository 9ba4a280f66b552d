"""CIFAR-10-C-bar noise and occlusion corruptions, batched, one random stream per image.

Mintun, Kirillov & Xie (NeurIPS 2021), "On Interaction Between Augmentations and Corruptions in
Natural Corruption Robustness": blue_noise_sample, brownish_noise, checkerboard_cutout and
lines, with the formulas of the official generator (facebookresearch/augmentation-corruption,
imagenet_c_bar/corrupt.py). Each op gets the table's level (0-10 scale) and the image side S
and derives its parameters as the reference does: `level * maxval / 10`. Images are in the
reference's 0..255 scale; the result is truncated to uint8 by the caller, as the reference's
np.uint8 does. The random draws of image i come from its own generator (`ImageRandom`); the
`draw_*` functions give them, so tests can recompute each image from the same draws.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.draw import line_aa
from torch import Tensor

from metabn_bench.corruptions.registry import corruption
from metabn_bench.corruptions.rng import ImageRandom


def scaled(level: float, maxval: float) -> float:
    """The reference's parameter from a 0-10 level: float(level) * maxval / 10."""
    return float(level) * maxval / 10.0


def pixel_grid(size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(row, column) coordinates of every pixel, float64 (size, size) each."""
    r = torch.arange(size, dtype=torch.float64, device=device)
    return r[:, None].expand(size, size), r[None, :].expand(size, size)


def _phases(rng: ImageRandom, maps: int, size: int) -> Tensor:
    """Random phases of `maps` real noise maps per image, Hermitian-mirrored: (B, maps, S, S).

    As the reference: uniform phases on the left half; an even side mirrors them through the
    centre, an odd side adds a centre column (its own draws, mirrored, zero in the middle)."""
    half = rng.uniform(maps, size, size // 2, dtype=torch.float64) * (2 * math.pi)
    if size % 2 == 0:
        return torch.cat([half, half.flip(-2, -1)], dim=-1)
    col = rng.uniform(maps, size // 2, 1, dtype=torch.float64) * (2 * math.pi)
    zero = torch.zeros_like(col[..., :1, :])
    centre = torch.cat([col, zero, col.flip(-2)], dim=-2)
    return torch.cat([half, centre, half.flip(-2, -1)], dim=-1)


def spectral_noise(phases: Tensor, power: Tensor) -> Tensor:
    """Real noise maps of unit (population) std from a power spectrum centred at S/2 and the
    phases: the real part of the inverse FFT of power * e^(i phase), shifted by S/2."""
    size = phases.shape[-1]
    spectrum = torch.complex(power * torch.cos(phases), power * torch.sin(phases))
    spectrum = torch.roll(spectrum, (size // 2, size // 2), dims=(-2, -1))
    noise = torch.fft.ifft2(spectrum).real
    return noise / noise.std(dim=(-2, -1), unbiased=False, keepdim=True)


def centre_distance(size: int, device: torch.device) -> Tensor:
    """Euclidean distance of each pixel from (S/2, S/2), (S, S)."""
    row, col = pixel_grid(size, device)
    c = size / 2
    return torch.sqrt((col - c) * (col - c) + (row - c) * (row - c))


def draw_blue_noise_sample(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """The phases of one blue-noise map per image."""
    return {"phases": _phases(rng, 1, size)[:, 0]}


@corruption("blue_noise_sample", random=True)
def blue_noise_sample(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """Blue noise (power spectrum = distance from the centre frequency), normalised to unit std,
    thresholded at 3 * level / 10 - 2.5: pixels at or below it turn black, all channels."""
    size = x.shape[-1]
    threshold = scaled(level, 3.0) - 2.5
    noise = spectral_noise(draw_blue_noise_sample(rng, size)["phases"],
                           centre_distance(size, x.device))
    return x * 255 * (noise > threshold).unsqueeze(1).to(x.dtype)


def draw_brownish_noise(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """The phases of three noise maps (one per channel) per image."""
    return {"phases": _phases(rng, 3, size)}


@corruption("brownish_noise", random=True)
def brownish_noise(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """x + (64 * level / 10) * brownish noise per channel (power 1 / (distance^2 + 1)), unit std."""
    size = x.shape[-1]
    dist = centre_distance(size, x.device)
    noise = spectral_noise(draw_brownish_noise(rng, size)["phases"], 1 / (dist * dist + 1))
    return (x * 255 + scaled(level, 64) * noise).clamp(0, 255)


GRID_DRAWS = 40  # the largest checkerboard grid: int(4 * S // (0.1 * S))


def draw_checkerboard_cutout(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """Angle, square side (0.1-0.25 S, at least 1 pixel) and the grid's uniform draws.

    The reference draws a grid of int(4 S // side) squared cells; here every image draws the
    largest grid (40 x 40) and uses its top-left corner, so the draws have a fixed shape."""
    u = rng.uniform(2, dtype=torch.float64)
    side = torch.clamp_min((0.1 + 0.15 * u[:, 1]) * size, 1.0)
    return {"angle": u[:, 0] * (2 * math.pi), "side": side,
            "grid": rng.uniform(GRID_DRAWS, GRID_DRAWS, dtype=torch.float64)}


@corruption("checkerboard_cutout", random=True)
def checkerboard_cutout(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """A rotated checkerboard whose every other square is greyed (128) with probability
    level / 10 (a square is cut where its grid draw is below that fraction)."""
    size = x.shape[-1]
    d = draw_checkerboard_cutout(rng, size)
    row, col = pixel_grid(size, x.device)
    angle, side = d["angle"][:, None, None], d["side"][:, None, None]
    nx = (torch.cos(angle) * row + torch.sin(angle) * col) / side
    ny = (-torch.sin(angle) * row + torch.cos(angle) * col) / side
    cells = torch.floor((4 * size) / d["side"]).to(torch.long)[:, None, None]
    # int() truncates towards zero and a negative index counts from the end, as in NumPy.
    gx = torch.remainder(torch.trunc(nx).to(torch.long), cells)
    gy = torch.remainder(torch.trunc(ny).to(torch.long), cells)
    flat = d["grid"].flatten(1) < scaled(level, 1.0)
    cut = torch.gather(flat, 1, (gx * GRID_DRAWS + gy).flatten(1)).view_as(gx)
    white = torch.trunc(torch.remainder(nx, 2)) != torch.trunc(torch.remainder(ny, 2))
    keep = (white | ~cut).unsqueeze(1)
    return torch.where(keep, x * 255, torch.full_like(x, 128.0))


def draw_lines(rng: ImageRandom, level: float, size: int) -> dict[str, Tensor]:
    """Base angle, angle spread (0.1-1) and three uniforms per line (x, y, angle)."""
    count = int(scaled(level, 1.0) * size)
    u = rng.uniform(2 + 3 * count, dtype=torch.float64)
    return {"angle": u[:, 0] * (2 * math.pi), "spread": 0.1 + 0.9 * u[:, 1],
            "lines": u[:, 2:].reshape(len(rng), count, 3)}


def draw_line(out: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> None:
    """Blend one anti-aliased line (scikit-image's line_aa) towards grey 128, in place on a uint8
    (S, S, 3) image; values are truncated as NumPy's assignment into uint8 does."""
    rows, cols, weight = line_aa(x1, y1, x2, y2)
    size = out.shape[0]
    inside = (rows >= 0) & (cols >= 0) & (rows < size) & (cols < size)
    rows, cols, weight = rows[inside], cols[inside], weight[inside][:, None]
    out[rows, cols, :] = (1.0 - weight) * out[rows, cols, :].astype(np.float32) + weight * 128


@corruption("lines", random=True)
def lines(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """int(level / 10 * S) grey anti-aliased lines of half-length S through uniform points, at the
    base angle +- pi * spread. Lines are drawn one after another per image on the CPU (each
    blends over the ones before, as in the reference)."""
    size = x.shape[-1]
    d = draw_lines(rng, level, size)
    images = (x * 255).permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
    angles, spreads, draws = (d[k].cpu().numpy() for k in ("angle", "spread", "lines"))
    half = 1.0 * size
    for image, angle, spread, per_line in zip(images, angles, spreads, draws):
        for u in per_line:
            px, py = size * u[0], size * u[1]
            a = angle + 2 * np.pi * spread * (u[2] - 0.5)
            s, c = np.sin(a) * half, np.cos(a) * half
            draw_line(image, int(px - c), int(py - s), int(px + c), int(py + s))
    return torch.from_numpy(images).to(x.device).permute(0, 3, 1, 2).to(x.dtype)
