"""CIFAR-10-C-bar's geometric corruptions: pinch_and_twirl, ripple, circular_motion_blur and
transverse_chromatic_abberation.

Mintun, Kirillov & Xie (NeurIPS 2021); formulas of the official generator
(facebookresearch/augmentation-corruption, imagenet_c_bar/corrupt.py and utils/image.py). The
two warps resample with the reference's bilinear rule (taps outside the image are 0) in its
order of operations, batched on any device. The rotation and zoom of the other two are
SciPy's cubic-spline `ndimage.rotate` / `ndimage.zoom` (what the reference calls; their border
and rounding rules are SciPy's own), run on the CPU.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from metabn_bench.corruptions.cbar_noise import pixel_grid, scaled
from metabn_bench.corruptions.registry import corruption
from metabn_bench.corruptions.rng import ImageRandom


def bilinear_zero(image: Tensor, row: Tensor, col: Tensor) -> Tensor:
    """Sample (B, C, H, W) at real (row, col) points (B, h, w) as the reference's
    bilinear_interpolation: the four neighbours, 0 outside the image, weights in its order."""
    b, c, h, w = image.shape
    top, left = torch.floor(row), torch.floor(col)
    bottom, right = top + 1, left + 1
    flat = image.flatten(2)

    def tap(r: Tensor, q: Tensor) -> Tensor:
        inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        index = (r.clamp(0, h - 1) * w + q.clamp(0, w - 1)).to(torch.long).flatten(1)
        values = torch.gather(flat, 2, index.unsqueeze(1).expand(b, c, -1))
        return values.view(b, c, *row.shape[1:]) * inside.unsqueeze(1).to(image.dtype)

    w_up = (1.0 - col + left).unsqueeze(1)
    w_down = (1.0 - right + col).unsqueeze(1)
    upper = tap(top, left) * w_up + tap(top, right) * w_down
    lower = tap(bottom, left) * w_up + tap(bottom, right) * w_down
    return upper * (1.0 - row + top).unsqueeze(1) + lower * (1.0 - bottom + row).unsqueeze(1)


def cells_per_axis(size: int) -> int:
    """The reference twirls a 5 x 5 grid of cells at 224 pixels and a 3 x 3 grid otherwise."""
    return 5 if size == 224 else 3


def draw_pinch_and_twirl(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """The twirl direction (+1 or -1) of every cell, (B, n, n)."""
    n = cells_per_axis(size)
    return {"signs": 1 - 2 * rng.randint(0, 2, n, n).to(torch.float64)}


@corruption("pinch_and_twirl", random=True)
def pinch_and_twirl(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """Each cell of an n x n grid (side S // n) is pinched by t = sin(pi d / 2)^-amount (d: the
    distance from the cell's centre over its radius, amount = 0.4 level / 10 + 0.1) and twirled
    by +-(pi/2 level / 10) (1 - d)^2, cell after cell, each reading the image the previous
    cells left (in float32, as the reference's working copy)."""
    size = x.shape[-1]
    n = cells_per_axis(size)
    angles = draw_pinch_and_twirl(rng, size)["signs"] * scaled(level, math.pi / 2)
    amount = scaled(level, 0.4) + 0.1
    grid = size // n
    radius = grid / 2
    out = (x * 255).to(torch.float32).to(torch.float64)
    span = torch.arange(grid, dtype=torch.float64, device=x.device)
    for i in range(n):
        for j in range(n):
            top, left = j * grid, i * grid
            cy, cx = top + radius, left + radius
            row = (top + span)[:, None].expand(grid, grid)
            col = (left + span)[None, :].expand(grid, grid)
            dy, dx = row - cy, col - cx
            dist = torch.sqrt(dy * dy + dx * dx)
            # points outside the circle, or at its centre (np.round(dist, 3) == 0), stay put
            still = (dist > radius) | (dist * 1000 <= 0.5)
            d = dist / radius
            t = torch.sin(math.pi * 0.5 * d) ** (-amount)
            a = angles[:, i, j, None, None] * ((1 - d) ** 2)
            py, px = dy * t, dx * t
            new_row = torch.where(still, row, cy + (py * torch.cos(a) - px * torch.sin(a)))
            new_col = torch.where(still, col, cx + (py * torch.sin(a) + px * torch.cos(a)))
            cell = bilinear_zero(out, new_row, new_col)
            out[:, :, top:top + grid, left:left + grid] = cell.to(torch.float32).to(torch.float64)
    return out.clamp(0, 255)


def draw_ripple(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """Wavelengths (0.1-0.3 S) and phases of the row and column waves, (B, 2) each."""
    u = rng.uniform(4, dtype=torch.float64)
    return {"wavelengths": (0.1 + 0.2 * u[:, :2]) * size, "phases": u[:, 2:] * (2 * math.pi)}


@corruption("ripple", random=True)
def ripple(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """Each pixel samples p + A sin(2 pi p / wavelength + phase) per axis, A = 0.025 level / 10
    * S, bilinearly (0 outside the image)."""
    size = x.shape[-1]
    d = draw_ripple(rng, size)
    amplitude = scaled(level, 0.025) * size
    row, col = pixel_grid(size, x.device)
    wl, ph = d["wavelengths"][:, :, None, None], d["phases"][:, :, None, None]
    new_row = row + amplitude * torch.sin(2 * math.pi * row / wl[:, 0] + ph[:, 0])
    new_col = col + amplitude * torch.sin(2 * math.pi * col / wl[:, 1] + ph[:, 1])
    return bilinear_zero(x * 255, new_row, new_col).clamp(0, 255)


ROTATIONS = 21  # the reference's number of rotated copies


def cubic_bspline_weights(t: np.ndarray) -> np.ndarray:
    """The four cubic B-spline weights of the taps floor(c) - 1 .. floor(c) + 2, t = c - floor(c)."""
    return np.stack([(1 - t) ** 3 / 6, (3 * t ** 3 - 6 * t ** 2 + 4) / 6,
                     (-3 * t ** 3 + 3 * t ** 2 + 3 * t + 1) / 6, t ** 3 / 6])


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    period = 2 * size - 2
    index = np.mod(index, period)
    return np.where(index >= size, period - index, index)


def rotation_matrix(size: int, degrees: float) -> np.ndarray:
    """SciPy's ndimage.rotate(reshape=False, order=3, mode='constant') of an S x S plane of
    cubic-spline coefficients as an (S^2, S^2) matrix: a source point (rotation about the
    centre, SciPy's [[c, s], [-s, c]]) outside [0, S - 1] gives 0; taps beyond the border are
    mirrored, as SciPy's constant mode does (checked against SciPy in the tests)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    centre = (size - 1) / 2.0
    off_r = centre - (c * centre + s * centre)
    off_c = centre - (-s * centre + c * centre)
    row, col = np.mgrid[0:size, 0:size].astype(np.float64)
    src_r = off_r + c * row + s * col
    src_c = off_c + -s * row + c * col
    inside = ((src_r >= 0) & (src_r <= size - 1) & (src_c >= 0) & (src_c <= size - 1)).ravel()
    fr, fc = np.floor(src_r), np.floor(src_c)
    wr, wc = cubic_bspline_weights(src_r - fr), cubic_bspline_weights(src_c - fc)
    out = np.zeros((size * size, size * size))
    pixels = np.arange(size * size)
    for i in range(4):
        tap_r = _mirror(fr.astype(np.int64) - 1 + i, size)
        for j in range(4):
            tap_c = _mirror(fc.astype(np.int64) - 1 + j, size)
            np.add.at(out, (pixels, (tap_r * size + tap_c).ravel()),
                      np.where(inside, (wr[i] * wc[j]).ravel(), 0.0))
    return out


@functools.lru_cache(maxsize=16)
def circular_blur_matrix(size: int, level: float) -> np.ndarray:
    """The whole blur of one plane as one (S^2, S^2) matrix: the weighted mean of the 21 rotations
    composed with SciPy's spline prefilter of both axes (a linear map of the plane)."""
    prefilter = ndimage.spline_filter1d(np.eye(size), 3, axis=0, mode="constant")
    amount = scaled(level, 15)
    blur = np.zeros((size * size, size * size))
    total = 0.0
    for i in range(ROTATIONS):
        t = 2 * i / (ROTATIONS - 1) - 1
        factor = np.exp(-2 * t ** 2)
        blur += factor * rotation_matrix(size, t * amount)
        total += factor
    return (blur / total) @ np.kron(prefilter, prefilter)


@corruption("circular_motion_blur", random=False)
def circular_motion_blur(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """A Gaussian-weighted mean of 21 copies rotated by (2 i / 20 - 1) * 1.5 level degrees
    (weights exp(-2 (2 i / 20 - 1)^2)) with SciPy's cubic-spline rotate (zero outside) of the
    float32 image / 255. The reference rotates 21 times and sums in float32; here the blur is one
    precomputed linear map per (size, level) applied in float64 (a matrix product per plane,
    about 20x faster than calling SciPy), which can move a value across an integer boundary
    in rare cases (measured in the tests)."""
    b, c, h, w = x.shape
    matrix = torch.from_numpy(circular_blur_matrix(h, float(level))).to(x.device)
    planes = (x * 255).round().to(torch.float32).div(255).to(torch.float64).reshape(b * c, h * w)
    return (planes @ matrix.T * 255).reshape(b, c, h, w).clamp(0, 255)


def draw_transverse_chromatic_abberation(rng: ImageRandom) -> dict[str, Tensor]:
    """A random permutation of (1, 1 + s/2, 1 + s) over the three channels, (B, 3) indices."""
    return {"order": torch.argsort(rng.uniform(3, dtype=torch.float64), dim=1)}


@corruption("transverse_chromatic_abberation", random=True)
def transverse_chromatic_abberation(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """Each channel zoomed by its own factor (1, 1 + s/2 or 1 + s, s = 0.5 level / 10; random
    order) with SciPy's cubic spline without prefilter on the uint8 plane, centre-cropped."""
    size = x.shape[-1]
    scale = scaled(level, 0.5)
    factors = np.array([1.0, 1.0 + scale / 2, 1.0 + scale])
    order = draw_transverse_chromatic_abberation(rng)["order"].cpu().numpy()
    images = (x * 255).cpu().numpy().astype(np.uint8)
    out = np.empty_like(images)
    for k, image in enumerate(images):
        for c in range(3):
            zoomed = ndimage.zoom(image[c], factors[order[k, c]], prefilter=False)
            edge = (zoomed.shape[0] - size) // 2
            out[k, c] = zoomed[edge:edge + size, edge:edge + size]
    return torch.from_numpy(out).to(x.device, torch.float64)
