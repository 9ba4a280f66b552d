"""Batched resampling that reproduces the reference's SciPy, OpenCV and ImageMagick geometry.

- `clipped_zoom_matrix`: the reference's centre crop + scipy.ndimage.zoom(order=1) + centre trim
  as one linear map per axis, so zoom blur is a pair of matrix products per zoom factor.
- `motion_taps` / `motion_blur`: ImageMagick's MotionBlurImage (a one-sided line of Gaussian
  weights at integer offsets, edge pixels repeated) with a different angle per image.
- `affine_warp`: OpenCV's getAffineTransform + warpAffine (bilinear, BORDER_REFLECT_101),
  including its 1/32-pixel fixed-point coordinates.
- `sample_bilinear`: scipy.ndimage.map_coordinates(order=1) with a border rule.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metabn_bench.corruptions.filters import pad


@lru_cache(maxsize=512)
def clipped_zoom_matrix(n: int, factor: float) -> np.ndarray:
    """(n, n) linear map of one axis: crop the centre ceil(n/factor) samples, zoom them by
    `factor` with linear interpolation (SciPy's zoom: output size round(ch * factor), sample o
    read at o * (ch - 1) / (out - 1)), then keep the centre n samples."""
    ch = int(np.ceil(n / factor))
    top = (n - ch) // 2
    out = round(ch * factor)
    trim = (out - n) // 2
    m = np.zeros((n, n), dtype=np.float64)
    step = (ch - 1) / (out - 1) if out > 1 else 0.0
    for r in range(n):
        pos = (r + trim) * step
        lo = int(np.floor(pos))
        frac = pos - lo
        m[r, top + min(lo, ch - 1)] += 1.0 - frac
        if frac > 0 and lo + 1 < ch:
            m[r, top + lo + 1] += frac
    return m


def zoom_factors(end: float, step: float) -> list[float]:
    """The reference's np.arange(1, end, step) zoom factors (floating-point arange)."""
    return [float(z) for z in np.arange(1, end, step)]


def clipped_zoom(x: Tensor, factors: list[float]) -> Tensor:
    """Stack of clipped zooms of a (B, C, H, W) batch: (B, K, C, H, W) for K factors."""
    h, w = x.shape[-2:]
    rows = torch.as_tensor(np.stack([clipped_zoom_matrix(h, f) for f in factors]),
                           dtype=x.dtype, device=x.device)
    cols = torch.as_tensor(np.stack([clipped_zoom_matrix(w, f) for f in factors]),
                           dtype=x.dtype, device=x.device)
    # rows: (K, H, H) applied on the left, cols: (K, W, W) on the right of every (H, W) plane.
    y = torch.einsum("kih,bchw->bkciw", rows, x)
    return torch.einsum("bkciw,kjw->bkcij", y, cols)


# --- ImageMagick motion blur ------------------------------------------------------------------


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's motion-blur weights: width 2*ceil(radius)+1, exp(-i^2 / 2 sigma^2), normalised."""
    width = 2 * math.ceil(radius) + 1 if radius > 0 else 3
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i * i) / (2.0 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
    return k / k.sum()


def motion_offsets(width: int, angles_deg: Tensor) -> tuple[Tensor, Tensor]:
    """Integer (dx, dy) of each tap for each angle, (B, width) each, as ImageMagick rounds them:
    ceil(i * cos(a) - 0.5) along x and ceil(i * sin(a) - 0.5) along y."""
    a = torch.deg2rad(angles_deg.to(torch.float64)).unsqueeze(1)
    i = torch.arange(width, dtype=torch.float64, device=a.device).unsqueeze(0)
    px, py = width * torch.sin(a), width * torch.cos(a)
    hyp = torch.hypot(px, py)
    dx = torch.ceil(i * py / hyp - 0.5).to(torch.int64)
    dy = torch.ceil(i * px / hyp - 0.5).to(torch.int64)
    return dx, dy


def motion_blur(x: Tensor, radius: float, sigma: float, angles_deg: Tensor) -> Tensor:
    """Motion blur of (B, C, H, W) with one angle per image: out(y, x) = sum_i k_i * in(y + dy_i,
    x + dx_i), edge pixels repeated beyond the border (ImageMagick's virtual pixels).

    The input holds 8-bit values (0..255, integers: ImageMagick blurs the 8-bit image), so the
    taps are gathered from a float32 copy (exact; a third less time than float64 gathers) and
    summed in float64 in tap order, as the per-pixel algorithm does."""
    kernel = motion_kernel(radius, sigma)
    width = len(kernel)
    b, c, h, w = x.shape
    dx, dy = motion_offsets(width, angles_deg.to(x.device))
    # pad only as far as the taps reach (edge-repeated), not the kernel width on every side
    top, bottom = max(0, -int(dy.min())), max(0, int(dy.max()))
    left, right = max(0, -int(dx.min())), max(0, int(dx.max()))
    padded = pad(x.to(torch.float32), top, bottom, left, right, "edge").reshape(b, c, -1)
    wp = w + left + right
    base = ((torch.arange(h, device=x.device) + top).view(h, 1) * wp
            + (torch.arange(w, device=x.device) + left).view(1, w)).view(1, -1)
    out = torch.zeros(b, c, h * w, dtype=x.dtype, device=x.device)
    for i in range(width):
        shift = (dy[:, i] * wp + dx[:, i]).view(b, 1)
        idx = (base + shift).unsqueeze(1).expand(b, c, h * w)
        out.add_(padded.gather(2, idx), alpha=float(kernel[i]))
    return out.view(b, c, h, w)


# --- OpenCV affine warp -----------------------------------------------------------------------


def affine_from_points(src: Tensor, dst: Tensor) -> Tensor:
    """cv2.getAffineTransform for a batch: (B, 3, 2) point pairs -> (B, 2, 3) matrices (float64)."""
    b = src.shape[0]
    a = torch.zeros(b, 6, 6, dtype=torch.float64, device=src.device)
    s = src.to(torch.float64)
    a[:, 0::2, 0:2] = s
    a[:, 0::2, 2] = 1
    a[:, 1::2, 3:5] = s
    a[:, 1::2, 5] = 1
    rhs = dst.to(torch.float64).reshape(b, 6, 1)
    return torch.linalg.solve(a, rhs).view(b, 2, 3)


def invert_affine(m: Tensor) -> Tensor:
    """cv2.invertAffineTransform for (B, 2, 3) float64 matrices."""
    d = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    d = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    a11, a22 = m[:, 1, 1] * d, m[:, 0, 0] * d
    a12, a21 = -m[:, 0, 1] * d, -m[:, 1, 0] * d
    b1 = -a11 * m[:, 0, 2] - a12 * m[:, 1, 2]
    b2 = -a21 * m[:, 0, 2] - a22 * m[:, 1, 2]
    return torch.stack([torch.stack([a11, a12, b1], 1), torch.stack([a21, a22, b2], 1)], 1)


def affine_warp(x: Tensor, forward: Tensor) -> Tensor:
    """cv2.warpAffine(x, M, (W, H), INTER_LINEAR, BORDER_REFLECT_101) per image of a batch.

    OpenCV maps each output pixel through the inverse matrix in 1/1024 fixed point and keeps
    1/32-pixel interpolation weights; the same quantisation is done here.
    """
    b, _, h, w = x.shape
    inv = invert_affine(forward.to(x.device))
    xs = torch.arange(w, dtype=torch.float64, device=x.device).view(1, 1, w)
    ys = torch.arange(h, dtype=torch.float64, device=x.device).view(1, h, 1)
    m = inv.view(b, 6, 1, 1)
    # OpenCV: X = (round(M0*x*1024) + round((M1*y + M2)*1024) + 16) >> 5, likewise Y.
    gx = torch.round(m[:, 0] * xs * 1024) + torch.round((m[:, 1] * ys + m[:, 2]) * 1024) + 16
    gy = torch.round(m[:, 3] * xs * 1024) + torch.round((m[:, 4] * ys + m[:, 5]) * 1024) + 16
    qx, qy = gx.to(torch.int64) >> 5, gy.to(torch.int64) >> 5  # arithmetic shifts: floor
    # 1/32-pixel source positions, exactly representable.
    return sample_bilinear(x, qy.to(torch.float64) / 32, qx.to(torch.float64) / 32, "mirror")


# grid_sample's reflection about the pixel edges (align_corners=False) is SciPy's `reflect`;
# about the pixel centres (align_corners=True) it is OpenCV's reflect-101.
_GRID_MODES = {"symmetric": ("reflection", False), "mirror": ("reflection", True),
               "edge": ("border", True)}


def sample_bilinear(x: Tensor, rows: Tensor, cols: Tensor, mode: str) -> Tensor:
    """scipy.ndimage.map_coordinates(order=1) of every channel at per-image (B, H', W') float
    coordinates; neighbours outside the image follow the border rule `mode`.

    Computed by grid_sample in float64 (one fused pass; equal to a per-neighbour gather up to
    ~1e-15), returned in x's dtype.
    """
    h, w = x.shape[-2:]
    padding, corners = _GRID_MODES[mode]
    rows, cols = rows.to(torch.float64), cols.to(torch.float64)
    if corners:
        gx, gy = 2 * cols / max(w - 1, 1) - 1, 2 * rows / max(h - 1, 1) - 1
    else:
        gx, gy = (2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1
    grid = torch.stack([gx, gy], -1)
    out = F.grid_sample(x.to(torch.float64), grid, mode="bilinear", padding_mode=padding,
                        align_corners=corners)
    return out.to(x.dtype)
