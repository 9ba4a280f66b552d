"""The embedded synthetic data set: 10 classes of procedurally drawn 32x32 colour images.

Each image is one shape (the class) with random position, size, rotation, aspect, colour and
texture, on a random gradient-and-texture background, with distractor blobs and pixel noise.
Shapes are rasterised from signed distance functions with anti-aliasing. Everything is drawn
from NumPy generators keyed by (seed, split, stream), one array per stream, so image i is the
same whatever the number of images requested: a smaller set is a prefix of a larger one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metabn_bench.data.arrays import ArraySet

CLASSES = (
    "disk", "square", "triangle", "ring", "cross",
    "star", "crescent", "bar", "pair", "corner",
)
SIZES = {"train": 20000, "test": 2000}
# One saturated colour per class, hues evenly spaced around the colour wheel.
PALETTE = torch.tensor([[0.5 + 0.5 * math.cos(2 * math.pi * (k / 10 + c / 3)) for c in range(3)]
                        for k in range(10)], dtype=torch.float32)
VERSION = 1
SOURCE = f"synthetic shapes v{VERSION} (embedded, procedurally generated)"
_SPLIT_IDS = {"train": 1, "test": 2}


def _rng(seed: int, split: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([VERSION, seed, _SPLIT_IDS[split], stream])


def _shape_sdf(cls: int, u: Tensor, v: Tensor) -> Tensor:
    """Signed distance (negative inside) of class `cls`'s shape, in units of its radius."""
    r = torch.hypot(u, v)
    if cls == 0:  # disk
        return r - 1.0
    if cls == 1:  # square
        return torch.maximum(u.abs(), v.abs()) - 0.8
    if cls == 2:  # equilateral triangle
        k = 3.0**0.5
        edges = torch.maximum(-v - 0.5, (k * u + v) / 2 - 0.5)
        return torch.maximum(edges, (-k * u + v) / 2 - 0.5) * 1.3
    if cls == 3:  # ring
        return (r - 0.72).abs() - 0.26
    if cls == 4:  # cross
        arm_h = torch.maximum(u.abs() - 1.0, v.abs() - 0.28)
        arm_v = torch.maximum(u.abs() - 0.28, v.abs() - 1.0)
        return torch.minimum(arm_h, arm_v)
    if cls == 5:  # five-pointed star (polar approximation)
        theta = torch.atan2(v, u)
        return (r - (0.62 + 0.38 * torch.cos(5 * theta))) * 0.7
    if cls == 6:  # crescent
        return torch.maximum(r - 1.0, 0.8 - torch.hypot(u - 0.5, v))
    if cls == 7:  # bar
        return torch.maximum(u.abs() - 1.05, v.abs() - 0.3)
    if cls == 8:  # pair of dots
        return torch.minimum(torch.hypot(u + 0.55, v), torch.hypot(u - 0.55, v)) - 0.42
    # corner (an L)
    leg_a = torch.maximum((u + 0.55).abs() - 0.3, v.abs() - 0.95)
    leg_b = torch.maximum(u.abs() - 0.85, (v - 0.65).abs() - 0.3)
    return torch.minimum(leg_a, leg_b)


def _smooth(low: Tensor, size: int) -> Tensor:
    """Bilinear upsampling of (N, c, k, k) noise to (N, c, size, size): a smooth texture."""
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=True)


def _col(x: Tensor) -> Tensor:
    """(N,) or (N, c) -> broadcastable against (N, c, H, W)."""
    return x.reshape(x.shape[0], -1, 1, 1)


def _draw(labels: Tensor, p: Tensor, tex: Tensor, noise: Tensor, size: int) -> Tensor:
    """Render (N, 3, H, W) images in [0, 1] from per-image parameters `p` (N, 32 uniforms)."""
    n = labels.shape[0]
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = grid.view(1, 1, size, 1), grid.view(1, 1, 1, size)

    # Background: a two-colour linear gradient times a smooth texture.
    ang = p[:, 6] * 2 * torch.pi
    t = _col(torch.cos(ang)) * (xs - size / 2) + _col(torch.sin(ang)) * (ys - size / 2)
    t = (t / size + 0.5).clamp(0, 1)
    bg = _col(p[:, 0:3]) * (1 - t) + _col(p[:, 3:6]) * t
    bg = bg * (0.75 + 0.5 * _smooth(tex[:, :, :6, :6], size) * _col(p[:, 7]))

    # The shape: pose, size, aspect.
    cx, cy = size * (0.35 + 0.3 * p[:, 8]), size * (0.35 + 0.3 * p[:, 9])
    radius = _col(size * (0.26 + 0.12 * p[:, 10]))
    rot, aspect = p[:, 11] * 2 * torch.pi, _col(0.8 + 0.4 * p[:, 12])
    dx, dy = (xs - _col(cx)) / radius, (ys - _col(cy)) / radius
    cr, sr = _col(torch.cos(rot)), _col(torch.sin(rot))
    u = (cr * dx + sr * dy) * aspect
    v = (-sr * dx + cr * dy) / aspect
    sdf = torch.empty(n, 1, size, size)
    for cls in range(len(CLASSES)):
        sel = labels == cls
        if sel.any():
            sdf[sel] = _shape_sdf(cls, u[sel], v[sel])
    alpha = (0.5 - sdf * radius).clamp(0, 1)

    # Foreground colour: the class's palette colour blended with a random one (a weak colour
    # cue, as sky and foliage are in natural images), at a random contrast to the background.
    colour = PALETTE[labels] * 0.7 + p[:, 13:16] * 0.3
    mix = _col(0.55 + 0.45 * p[:, 16])
    fg = _col(bg.mean(dim=(2, 3))) * (1 - mix) + _col(colour) * mix
    fg = fg * (0.8 + 0.4 * _smooth(tex[:, :, 6:, 6:], size))
    img = bg * (1 - alpha) + fg * alpha

    # Distractors: up to two small blobs that are not the class shape.
    for k in range(2):
        q = p[:, 17 + 5 * k : 22 + 5 * k]
        d = torch.hypot(xs - _col(size * q[:, 0]), ys - _col(size * q[:, 1]))
        d = d - _col(size * (0.04 + 0.06 * q[:, 2]))
        a = (0.5 - d).clamp(0, 1) * _col((q[:, 3] < 0.35).float())
        col = torch.stack([q[:, 4], 1 - q[:, 4], torch.full((n,), 0.5)], dim=1)
        img = img * (1 - a) + _col(col) * a

    return img + noise * _col(0.01 + 0.03 * p[:, 27])


def make_split(split: str, n: int | None = None, seed: int = 0) -> ArraySet:
    """The synthetic `split` ('train' or 'test') with n images (default: SIZES[split])."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}")
    n = SIZES[split] if n is None else n
    size = 32
    # Balanced labels: every block of 10 consecutive images holds each class once.
    blocks = -(-n // 10)
    labels = np.argsort(_rng(seed, split, 0).random((blocks, 10)), axis=1).reshape(-1)[:n]
    params = _rng(seed, split, 1).random((n, 32), dtype=np.float32)
    tex = _rng(seed, split, 2).random((n, 3, 12, 12), dtype=np.float32)
    # Pixel noise: uniform with unit variance (cheaper to draw than Gaussian, looks the same).
    noise = (_rng(seed, split, 3).random((n, 3, size, size), dtype=np.float32) - 0.5) * 12**0.5
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    chunk = 2048  # bounded memory; the streams above make chunking invisible in the output
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        img = _draw(torch.from_numpy(labels[sl]), torch.from_numpy(params[sl]),
                    torch.from_numpy(tex[sl]), torch.from_numpy(noise[sl]), size)
        img = (img * 255).round().clamp(0, 255).to(torch.uint8)
        images[sl] = img.permute(0, 2, 3, 1).numpy()
    return ArraySet(images, labels.astype(np.int64), CLASSES, SOURCE, {"seed": seed})
