"""Blur corruptions (Hendrycks & Dietterich 2019), batched."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metabn_bench.corruptions.registry import clip255, corruption
from metabn_bench.corruptions.rng import ImageRandom


def gaussian_kernel_1d(ksize: int, sigma: float) -> np.ndarray:
    """OpenCV's getGaussianKernel(ksize, sigma) for sigma > 0: sampled and normalised."""
    half = (ksize - 1) / 2
    g = np.exp(-((np.arange(ksize) - half) ** 2) / (2 * sigma * sigma))
    return g / g.sum()


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's defocus kernel: a disk X^2 + Y^2 <= r^2 on a 17x17 grid (larger for
    r > 8), normalised, then blurred with a 3x3 Gaussian of sigma `alias_blur`.

    Trimmed to its non-zero support, which leaves the convolution unchanged.
    """
    size = 8 if radius <= 8 else math.ceil(radius)
    ax = np.arange(-size, size + 1)
    X, Y = np.meshgrid(ax, ax)
    disk = (radius**2 >= X**2 + Y**2).astype(np.float64)
    disk /= disk.sum()
    g = gaussian_kernel_1d(3, alias_blur)
    padded = np.pad(disk, 1)
    blurred = np.zeros_like(padded)
    for i in range(3):
        for j in range(3):
            blurred += g[i] * g[j] * np.roll(np.roll(padded, i - 1, 0), j - 1, 1)
    nz = np.argwhere(blurred > 0)
    (r0, c0), (r1, c1) = nz.min(0), nz.max(0)
    half = max(r1 - (blurred.shape[0] // 2), (blurred.shape[0] // 2) - r0,
               c1 - (blurred.shape[1] // 2), (blurred.shape[1] // 2) - c0)
    mid = blurred.shape[0] // 2
    return blurred[mid - half:mid + half + 1, mid - half:mid + half + 1]


def filter2d_reflect101(x: Tensor, kernel: np.ndarray) -> Tensor:
    """Per-channel 2-D correlation with OpenCV's default border (reflect-101)."""
    k = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    kh, kw = k.shape
    c = x.shape[1]
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    weight = k.expand(c, 1, kh, kw).contiguous()
    return F.conv2d(padded, weight, groups=c)


@corruption("defocus_blur", random=False)
def defocus_blur(x: Tensor, params: tuple[float, float], rng: ImageRandom) -> Tensor:
    """Convolution with an anti-aliased disk of (radius, alias sigma), clipped."""
    radius, alias = params
    return clip255(filter2d_reflect101(x, disk_kernel(radius, alias)))
