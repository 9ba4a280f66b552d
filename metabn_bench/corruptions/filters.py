"""Batched image filters that reproduce the reference libraries' arithmetic.

The reference generator calls OpenCV, SciPy, scikit-image and PIL per image; each of those has
its own border rule and rounding. The helpers here apply the same filters to whole batches
(B, C, H, W) on any device, with the border rule named after the library that defines it:

- "edge": repeat the border pixel (SciPy/scikit-image `nearest`, OpenCV BORDER_REPLICATE,
  ImageMagick's default virtual pixels);
- "symmetric": d c b a | a b c d | d c b a (SciPy/scikit-image `reflect`);
- "mirror": d c b | a b c d | c b a (OpenCV's default BORDER_REFLECT_101).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

BORDERS = ("edge", "symmetric", "mirror")


def border_index(n: int, positions: np.ndarray | Tensor, mode: str) -> Tensor:
    """Map (possibly out-of-range) integer positions on an axis of length n to valid indices."""
    i = torch.as_tensor(positions, dtype=torch.int64)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    if i.numel() and bool((i.min() >= -n) & (i.max() < 2 * n)):
        # One reflection suffices (the common case): no integer division.
        if mode == "symmetric":
            i = torch.where(i < 0, -1 - i, i)
            return torch.where(i >= n, 2 * n - 1 - i, i)
        if mode == "mirror":
            i = torch.where(i < 0, -i, i)
            return torch.where(i >= n, 2 * n - 2 - i, i).clamp_(0, n - 1)
    if mode == "symmetric":
        i = torch.remainder(i, 2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        i = torch.remainder(i, 2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown border mode '{mode}'; valid: {', '.join(BORDERS)}")


def pad(x: Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> Tensor:
    """Pad the last two axes by any amount (even beyond the image size) with a border rule."""
    h, w = x.shape[-2:]
    if max(top, bottom) < h and max(left, right) < w and mode in BORDERS:
        # Fast path where the border fits in the image: fill a new tensor with slice copies.
        out = x.new_empty((*x.shape[:-2], h + top + bottom, w + left + right))
        out[..., top:top + h, left:left + w] = x
        _fill_border(out, top, bottom, h, -2, mode)
        _fill_border(out, left, right, w, -1, mode)
        return out
    rows = border_index(h, np.arange(-top, h + bottom), mode).to(x.device)
    cols = border_index(w, np.arange(-left, w + right), mode).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _fill_border(out: Tensor, before: int, after: int, n: int, axis: int, mode: str) -> None:
    """Fill the `before`/`after` border slices of `out` along `axis` from its centre n samples."""
    def at(start: int, length: int) -> Tensor:
        return out.narrow(axis, start, length)

    if before:
        if mode == "edge":
            at(0, before).copy_(at(before, 1).expand_as(at(0, before)))
        else:
            first = before if mode == "symmetric" else before + 1
            at(0, before).copy_(at(first, before).flip(axis))
    if after:
        end = before + n
        if mode == "edge":
            at(end, after).copy_(at(end - 1, 1).expand_as(at(end, after)))
        else:
            last = end - after if mode == "symmetric" else end - after - 1
            at(end, after).copy_(at(last, after).flip(axis))


def shifted_sum(padded: Tensor, taps: np.ndarray | tuple[float, ...], axis: int, size: int) -> Tensor:
    """sum_i taps[i] * padded[..., i:i + size] along `axis` (-1 or -2): a 1-D correlation as
    shifted multiply-adds, much faster than conv2d for float64 on the CPU."""
    out = None
    for i, t in enumerate(taps):
        if t == 0:
            continue
        part = padded.narrow(axis, i, size)
        out = part * float(t) if out is None else out.add_(part, alpha=float(t))
    if out is None:
        shape = list(padded.shape)
        shape[axis] = size
        return padded.new_zeros(shape)
    return out


@lru_cache(maxsize=256)
def gaussian_taps(sigma: float, truncate: float) -> tuple[float, ...]:
    """SciPy's gaussian_filter1d weights: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * x * x / (float(sigma) ** 2))
    return tuple((w / w.sum()).tolist())


def correlate_separable(x: Tensor, taps_h: tuple[float, ...] | None,
                        taps_w: tuple[float, ...] | None, mode: str) -> Tensor:
    """Separable correlation over (H, W) of a (B, C, H, W) batch, per channel, with a border rule.

    Rows first, then columns (SciPy's axis order); None skips an axis. float64 input uses
    shifted multiply-adds (conv2d is slow in float64 on the CPU), other dtypes conv2d.
    """
    h, w = x.shape[-2:]
    if x.dtype != torch.float64:
        return _conv_separable(x, taps_h, taps_w, mode)
    y = x
    if taps_h is not None and len(taps_h) > 1:
        r = len(taps_h) // 2
        y = shifted_sum(pad(y, r, r, 0, 0, mode), taps_h, -2, h)
    if taps_w is not None and len(taps_w) > 1:
        r = len(taps_w) // 2
        y = shifted_sum(pad(y, 0, 0, r, r, mode), taps_w, -1, w)
    return y


def _conv_separable(x: Tensor, taps_h: tuple[float, ...] | None,
                    taps_w: tuple[float, ...] | None, mode: str) -> Tensor:
    """The float32 path of `correlate_separable`: conv2d, fast on every device."""
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    if taps_h is not None and len(taps_h) > 1:
        r = len(taps_h) // 2
        k = torch.tensor(taps_h, dtype=x.dtype, device=x.device).view(1, 1, -1, 1)
        y = F.conv2d(pad(y, r, r, 0, 0, mode), k)
    if taps_w is not None and len(taps_w) > 1:
        r = len(taps_w) // 2
        k = torch.tensor(taps_w, dtype=x.dtype, device=x.device).view(1, 1, 1, -1)
        y = F.conv2d(pad(y, 0, 0, r, r, mode), k)
    return y.reshape(b, c, h, w)


def gaussian_filter(x: Tensor, sigma: float, mode: str = "edge", truncate: float = 4.0) -> Tensor:
    """scipy.ndimage.gaussian_filter over (H, W) of every channel (scikit-image's `gaussian`
    with channel_axis uses mode `nearest` = "edge" and truncate 4); sigma 0 returns x."""
    if sigma <= 1e-15:
        return x
    taps = gaussian_taps(float(sigma), float(truncate))
    return correlate_separable(x, taps, taps, mode)


@lru_cache(maxsize=64)
def gaussian_matrix(n: int, sigma: float, mode: str, truncate: float = 4.0) -> np.ndarray:
    """SciPy's gaussian_filter1d on an axis of length n as an (n, n) float64 matrix: row i holds
    the taps of output i, each added at its source index after the border rule folds it in."""
    taps = gaussian_taps(float(sigma), float(truncate))
    r = len(taps) // 2
    m = np.zeros((n, n), dtype=np.float64)
    for k, tap in enumerate(taps):
        src = border_index(n, np.arange(n) + k - r, mode).numpy()
        np.add.at(m, (np.arange(n), src), tap)
    return m


def gaussian_filter_matrix(x: Tensor, sigma: float, mode: str, truncate: float = 4.0) -> Tensor:
    """gaussian_filter over (H, W) of a (..., H, W) float64 tensor as two matrix products:
    M_h x M_w^T. The same linear map as the separable correlation, its sums in another order
    (~1e-16 relative); far faster where the kernel is as wide as the image."""
    h, w = x.shape[-2:]
    mh = torch.from_numpy(gaussian_matrix(h, sigma, mode, truncate)).to(x.device, x.dtype)
    mw = mh if w == h else torch.from_numpy(
        gaussian_matrix(w, sigma, mode, truncate)).to(x.device, x.dtype)
    return torch.matmul(torch.matmul(mh, x), mw.T)


def filter2d(x: Tensor, kernel: np.ndarray, mode: str = "mirror") -> Tensor:
    """Per-channel 2-D correlation with an odd-sized kernel (OpenCV filter2D, default border):
    shifted multiply-adds for small kernels, an FFT product for large ones."""
    kh, kw = kernel.shape
    h, w = x.shape[-2:]
    padded = pad(x, kh // 2, kh // 2, kw // 2, kw // 2, mode)
    if np.count_nonzero(kernel) <= 64:
        out = None
        for i, j in zip(*np.nonzero(kernel)):
            part = padded[..., i:i + h, j:j + w]
            t = float(kernel[i, j])
            out = part * t if out is None else out.add_(part, alpha=t)
        return out
    # Correlation = convolution with the flipped kernel; keep the 'valid' part.
    size = (padded.shape[-2] + kh - 1, padded.shape[-1] + kw - 1)
    k = torch.as_tensor(np.ascontiguousarray(kernel[::-1, ::-1]), dtype=x.dtype, device=x.device)
    full = torch.fft.irfft2(torch.fft.rfft2(padded, size) * torch.fft.rfft2(k, size), size)
    return full[..., kh - 1:kh - 1 + h, kw - 1:kw - 1 + w]


def cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """OpenCV getGaussianKernel(ksize, sigma) for sigma > 0 (float64)."""
    half = (ksize - 1) / 2
    g = np.exp(-((np.arange(ksize) - half) ** 2) / (2 * sigma * sigma))
    return g / g.sum()


# --- PIL's resampling (Pillow's Resample.c), exact for 8-bit images -----------------------------

PIL_PRECISION_BITS = 32 - 8 - 2


def _pil_box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


@lru_cache(maxsize=256)
def pil_box_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point BOX coefficients for resizing an axis in_size -> out_size.

    Returns an (out_size, in_size) integer matrix; output = (row . pixels + 2^21) >> 22, clipped.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    ss = 1.0 / filterscale
    coeffs = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        w = np.array([_pil_box((x + xmin - center + 0.5) * ss) for x in range(xmax - xmin)])
        if w.sum() != 0.0:
            w = w / w.sum()
        coeffs[xx, xmin:xmax] = w
    one = 1 << PIL_PRECISION_BITS
    return np.where(coeffs < 0, np.trunc(-0.5 + coeffs * one), np.trunc(0.5 + coeffs * one))


def _pil_pass(x: Tensor, coeffs: np.ndarray) -> Tensor:
    """One axis (the last) of Pillow's 8-bit resampling, in exact float64 integer arithmetic.

    Every product and sum is an integer below 2^53, so the result does not depend on the order
    of the sums: one 2-D matrix product with the rounding offset as its bias (a 4-D product
    with a transposed operand takes a batched path measured 3-5x slower)."""
    k = torch.as_tensor(coeffs.T, dtype=torch.float64, device=x.device)
    flat = x.to(torch.float64).reshape(-1, x.shape[-1])
    half = torch.full((1, k.shape[1]), float(1 << (PIL_PRECISION_BITS - 1)),
                      dtype=torch.float64, device=x.device)
    acc = torch.addmm(half, flat, k)
    # dividing by a power of two is exact: the same as multiplying by its inverse
    out = acc.mul_(1.0 / (1 << PIL_PRECISION_BITS)).floor_().clamp_(0, 255)
    return out.view(*x.shape[:-1], k.shape[1])


def pil_resize_box(x255: Tensor, out_h: int, out_w: int) -> Tensor:
    """PIL Image.resize(..., Image.BOX) of uint8-valued (B, C, H, W) images (values 0..255).

    Horizontal pass first, each pass rounded to 8 bits, as Pillow does; returns float64 values.
    """
    h, w = x255.shape[-2:]
    y = x255
    if out_w != w:
        y = _pil_pass(y, pil_box_coefficients(w, out_w))
    if out_h != h:
        y = _pil_pass(y.transpose(-1, -2).contiguous(),
                      pil_box_coefficients(h, out_h)).transpose(-1, -2)
    return y


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << math.ceil(math.log2(n))
