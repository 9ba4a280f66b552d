"""ImageNet-C-bar's procedural textures: single_frequency_greyscale, cocentric_sine_waves,
plasma_noise and perlin_noise, batched, one random stream per image.

Mintun, Kirillov & Xie (NeurIPS 2021), "On Interaction Between Augmentations and Corruptions in
Natural Corruption Robustness"; the formulas of the official generator
(facebookresearch/augmentation-corruption, imagenet_c_bar/corrupt.py and its Perlin noise
generator), evaluated for every pixel of the batch at once in float64, the reference's
precision. Each op gets the table's level (0-10 scale); parameters the reference ties to its
image side (im_size) scale with the side S of the images given. The reference's x is the column
and y the row. The `draw_*` functions give each image's draws, so tests can recompute an image
from the same draws.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metabn_bench.corruptions.cbar_noise import pixel_grid, scaled
from metabn_bench.corruptions.registry import corruption
from metabn_bench.corruptions.rng import ImageRandom


def floor_mod(a: Tensor, b: Tensor | float) -> Tensor:
    """Python's / NumPy's float `a % b` for b > 0: the exact fmod, shifted into [0, b).

    torch.remainder computes a - b * floor(a / b), which can differ in the last bits."""
    m = torch.fmod(a, b)
    return torch.where(m < 0, m + b, m)


def _column(t: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1), to broadcast a per-image parameter over the pixels."""
    return t[:, None, None]


def draw_single_frequency_greyscale(rng: ImageRandom) -> dict[str, Tensor]:
    """Per image: the two angular frequencies (rad / pixel) along columns and rows, and the
    phase. As the reference: one magnitude uniform in (-pi, pi), the other uniform within its
    absolute value, in a random order; the phase uniform in (0, 2 pi)."""
    u = rng.uniform(4, dtype=torch.float64)
    mag = -math.pi + 2 * math.pi * u[:, 0]
    other = -mag.abs() + 2 * mag.abs() * u[:, 1]
    swap = u[:, 2] < 0.5
    freq = torch.stack([torch.where(swap, other, mag), torch.where(swap, mag, other)], dim=1)
    return {"freq": freq, "phase": 2 * math.pi * u[:, 3]}


@corruption("single_frequency_greyscale", random=True)
def single_frequency_greyscale(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """x + (196 level / 10) sin(col f0 + row f1 + phase), the same wave on every channel."""
    d = draw_single_frequency_greyscale(rng)
    row, col = pixel_grid(x.shape[-1], x.device)
    f = d["freq"]
    wave = torch.sin(col * _column(f[:, 0]) + row * _column(f[:, 1]) + _column(d["phase"]))
    return (x * 255 + scaled(level, 196) * wave.unsqueeze(1)).clamp(0, 255)


def draw_cocentric_sine_waves(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """Per image: the centre (column, row) uniform in the image, the angular frequency (0-10),
    the amplitude of the rings' wobble and the ring width (both uniform in 0-S/10)."""
    u = rng.uniform(5, dtype=torch.float64)
    return {"offset": u[:, :2] * size, "freq": 10 * u[:, 2], "amplitude": u[:, 3] * (size / 10),
            "ring_width": u[:, 4] * (size / 10)}


@corruption("cocentric_sine_waves", random=True)
def cocentric_sine_waves(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """x + (128 level / 10) (((r + amplitude sin(freq theta)) mod width) / width - 1/2): rings
    around a random centre (r its distance, theta = atan2(dcol, drow)), a sawtooth across each
    ring, the same on every channel."""
    size = x.shape[-1]
    d = draw_cocentric_sine_waves(rng, size)
    row, col = pixel_grid(size, x.device)
    dx = col - _column(d["offset"][:, 0])
    dy = row - _column(d["offset"][:, 1])
    angle = torch.atan2(dx, dy) * _column(d["freq"])
    width = _column(d["ring_width"])
    ring = floor_mod(torch.sqrt(dx * dx + dy * dy) + torch.sin(angle) * _column(d["amplitude"]),
                     width) / width - 0.5
    return (x * 255 + scaled(level, 128) * ring.unsqueeze(1)).clamp(0, 255)


PLASMA_ITERATIONS = (4, 7)  # randint bounds of the reference: 4, 5 or 6 iterations


def draw_plasma_noise(rng: ImageRandom, size: int) -> dict[str, Tensor]:
    """Per image: time (0-6 pi), iterations (4-6), sharpness (0.5-1) and scale (0.075-0.2 S)."""
    u = rng.uniform(3, dtype=torch.float64)
    return {"time": 6 * math.pi * u[:, 0],
            "iterations": rng.randint(*PLASMA_ITERATIONS).to(u.device),
            "sharpness": 0.5 + 0.5 * u[:, 1], "scale": (0.075 + 0.125 * u[:, 2]) * size}


@corruption("plasma_noise", random=True)
def plasma_noise(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """(1 - a / 255) x + a (sin(X - t), sin((X + Y + sin t) / 2), sin(Y + t)), a = 64 level / 10:
    the pixel (X, Y) = (col, row) / scale is pushed `iterations` times along a rotated
    (cos, sin) field whose frequency grows 1.93x and amplitude falls by (2.25 - sharpness) per
    step (the reference's fourth factor starts at 0 and stays 0)."""
    size = x.shape[-1]
    d = draw_plasma_noise(rng, size)
    row, col = pixel_grid(size, x.device)
    scale, time = _column(d["scale"]), _column(d["time"])
    px, py = col / scale, row / scale
    freq = torch.ones_like(d["time"])  # the reference's i[0], i[1], i[2]: products, step by step
    slow = torch.ones_like(freq)
    damp = torch.ones_like(freq)
    for step in range(int(d["iterations"].max())):
        active = _column(d["iterations"] > step)
        phase = time / _column(slow)
        r0 = torch.cos(py * _column(freq) + phase) / _column(damp)
        r1 = torch.sin(px * _column(freq) + phase) / _column(damp)
        r0, r1 = r0 + (-r1) * 0.3, r1 + r0 * 0.3
        px = torch.where(active, px + r0, px)
        py = torch.where(active, py + r1, py)
        freq, slow, damp = freq * 1.93, slow * 1.15, damp * (2.25 - d["sharpness"])
    noise = torch.stack([torch.sin(px - time), torch.sin((px + py + torch.sin(time)) * 0.5),
                         torch.sin(py + time)], dim=1)
    a = scaled(level, 64)
    return ((1 - a / 255) * (x * 255) + a * noise).clamp(0, 255)


PERLIN_SIZE = 256  # the generator's lattice period B
PERLIN_OFFSET = 16 * 256  # N, added to coordinates before the lattice lookup
PERLIN_OCTAVES = (1.0, 2.0, 4.0, 8.0, 16.0)  # turbulence 16: frequencies 1, 2, ..., 16


def draw_perlin_noise(rng: ImageRandom) -> dict[str, Tensor]:
    """Per image: 256 lattice gradients (two integers in 0..511 each, as the reference's
    randint(2^31) % 512) and the 256 swap targets (0..255) of its permutation shuffle."""
    return {"gradients": rng.randint(0, 2 * PERLIN_SIZE, PERLIN_SIZE, 2),
            "swaps": rng.randint(0, PERLIN_SIZE, PERLIN_SIZE)}


def perlin_tables(gradients: Tensor, swaps: Tensor) -> tuple[Tensor, Tensor]:
    """The generator's tables from the draws: unit gradients (B, 256, 2) and the permutation
    repeated twice (B, 512).

    Gradients are ((v % 512) - 256) / 256, normalised; a zero vector (both draws 256) stays zero
    where the reference divides by zero. The permutation is the reference's shuffle: for i =
    255 .. 0, swap entries i and swaps[255 - i] (a biased shuffle, reproduced as it is)."""
    g = (gradients.to(torch.float64) - PERLIN_SIZE) / PERLIN_SIZE
    norm = torch.sqrt(g[..., 0] * g[..., 0] + g[..., 1] * g[..., 1]).unsqueeze(-1)
    g = torch.where(norm > 0, g / torch.where(norm > 0, norm, 1.0), 0.0)
    b = swaps.shape[0]
    perm = torch.arange(PERLIN_SIZE, device=swaps.device).repeat(b, 1)
    for k, i in enumerate(range(PERLIN_SIZE - 1, -1, -1)):
        j = swaps[:, k:k + 1]
        kept = perm[:, i:i + 1].clone()
        perm[:, i:i + 1] = perm.gather(1, j)
        perm.scatter_(1, j, kept)
    return g, torch.cat([perm, perm], dim=1)


def _lattice_noise(px: Tensor, py: Tensor, g: Tensor, perm: Tensor) -> Tensor:
    """The generator's noise(x, y) at every pixel: 1.5 x the s-curve blend of the four corner
    gradients' dot products, batched (px, py: (B, S, S), non-negative)."""
    b = px.shape[0]

    def corners(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = t + PERLIN_OFFSET
        whole = torch.floor(t)
        lo = whole.to(torch.long) % PERLIN_SIZE
        return lo, (lo + 1) % PERLIN_SIZE, t - whole

    bx0, bx1, rx0 = corners(px)
    by0, by1, ry0 = corners(py)
    rx1, ry1 = rx0 - 1.0, ry0 - 1.0

    def pick(table: Tensor, index: Tensor) -> Tensor:
        return table.gather(1, index.reshape(b, -1)).view_as(index)

    i, j = pick(perm, bx0), pick(perm, bx1)
    gx, gy = g[..., 0], g[..., 1]

    def dot(corner: Tensor, rx: Tensor, ry: Tensor) -> Tensor:
        return rx * pick(gx, corner) + ry * pick(gy, corner)

    sx = rx0 * rx0 * (3.0 - 2.0 * rx0)
    sy = ry0 * ry0 * (3.0 - 2.0 * ry0)
    u, v = dot(pick(perm, i + by0), rx0, ry0), dot(pick(perm, j + by0), rx1, ry0)
    a = u + sx * (v - u)
    u, v = dot(pick(perm, i + by1), rx0, ry1), dot(pick(perm, j + by1), rx1, ry1)
    lower = u + sx * (v - u)
    return 1.5 * (a + sy * (lower - a))


@corruption("perlin_noise", random=True)
def perlin_noise(x: Tensor, level: float, rng: ImageRandom) -> Tensor:
    """(1 - alpha) x + 255 alpha clip(0.5 turbulence + 0.5, 0, 1), alpha = 0.5 level / 10: Perlin
    turbulence (the sum of |noise(f p)| / f for f = 1, 2, 4, 8, 16) at p = (row, col) / (32 S /
    224), the same on every channel; the image term in float32, as the reference computes it."""
    size = x.shape[-1]
    d = draw_perlin_noise(rng)
    g, perm = perlin_tables(d["gradients"].to(x.device), d["swaps"].to(x.device))
    row, col = pixel_grid(size, x.device)
    step = 1 / (32 * size / 224)  # the reference's matrix entry: pixel coordinates times it
    b = x.shape[0]
    pr, pc = (row * step).expand(b, size, size), (col * step).expand(b, size, size)
    turbulence = torch.zeros_like(pr)
    for f in PERLIN_OCTAVES:
        turbulence = turbulence + _lattice_noise(f * pr, f * pc, g, perm).abs() / f
    noise = (0.5 * turbulence + 0.5).clamp(0, 1).unsqueeze(1)
    alpha = scaled(level, 0.5)
    image = ((1 - alpha) * (x * 255).to(torch.float32)).to(torch.float64)
    return (image + 255 * alpha * noise).clamp(0, 255)
