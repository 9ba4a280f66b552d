"""Straightforward per-image computations of the reference formulas (NumPy, PIL, SciPy,
scikit-image, OpenCV), written from the published algorithm descriptions, for the fidelity
tests of the deterministic corruptions. Each takes and returns one uint8 (H, W, 3) image."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import skimage.color
from PIL import Image
from scipy.ndimage import zoom as scipy_zoom
from skimage.filters import gaussian


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 1).__mul__(255).astype(np.uint8)


def brightness(img: np.ndarray, c: float) -> np.ndarray:
    hsv = skimage.color.rgb2hsv(img / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _to_uint8(skimage.color.hsv2rgb(hsv))


def saturate(img: np.ndarray, p: tuple[float, float]) -> np.ndarray:
    hsv = skimage.color.rgb2hsv(img / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * p[0] + p[1], 0, 1)
    return _to_uint8(skimage.color.hsv2rgb(hsv))


def contrast(img: np.ndarray, c: float) -> np.ndarray:
    x = img / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((x - means) * c + means)


def pixelate(img: np.ndarray, c: float) -> np.ndarray:
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def jpeg_compression(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def defocus_blur(img: np.ndarray, p: tuple[float, float]) -> np.ndarray:
    radius, alias = p
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    X, Y = np.meshgrid(grid, grid)
    disk = np.array(radius**2 >= X**2 + Y**2, dtype=np.float32)
    disk /= disk.sum()
    ksize = (3, 3) if radius <= 8 else (5, 5)
    kernel = cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias)
    x = img / 255.0
    return _to_uint8(np.stack([cv2.filter2D(x[..., c], -1, kernel) for c in range(3)], -1))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return _to_uint8(gaussian(img / 255.0, sigma=sigma, channel_axis=-1))


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    h = x.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out = scipy_zoom(x[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim:trim + h, trim:trim + h]


def zoom_blur(img: np.ndarray, p: tuple[float, float]) -> np.ndarray:
    x = (img / 255.0).astype(np.float32)
    factors = np.arange(1, p[0], p[1])
    out = np.zeros_like(x)
    for factor in factors:
        out += _clipped_zoom(x, factor)
    return _to_uint8((x + out) / (len(factors) + 1))


DETERMINISTIC: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {
    "brightness": brightness, "contrast": contrast, "saturate": saturate, "pixelate": pixelate,
    "jpeg_compression": jpeg_compression, "defocus_blur": defocus_blur,
    "gaussian_blur": gaussian_blur, "zoom_blur": zoom_blur,
}
