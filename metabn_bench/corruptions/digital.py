"""Digital corruptions (Hendrycks & Dietterich 2019), batched: contrast, elastic transform,
pixelate, JPEG, and the extra saturate."""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from metabn_bench.corruptions.color import hsv_to_rgb, rgb_to_hsv
from metabn_bench.corruptions.filters import gaussian_filter_matrix, pil_resize_box
from metabn_bench.corruptions.geometry import affine_from_points, affine_warp, sample_bilinear
from metabn_bench.corruptions.registry import clip255, corruption
from metabn_bench.corruptions.rng import ImageRandom

# torchvision 0.29 warns on every JPEG call that its codecs are deprecated; jpeg_codec()
# falls back to PIL once they are gone, so the warning tells our users nothing.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities",
                        category=DeprecationWarning)


@corruption("contrast", random=False)
def contrast(x: Tensor, c: float, rng: ImageRandom) -> Tensor:
    """(x - m) * c + m with m the image's per-channel mean, clipped."""
    means = x.mean(dim=(2, 3), keepdim=True)
    return clip255((x - means) * c + means)


@corruption("saturate", random=False)
def saturate(x: Tensor, params: tuple[float, float], rng: ImageRandom) -> Tensor:
    """HSV saturation * a + b (clipped to [0, 1]), back to RGB, clipped."""
    a, b = params
    h, s, v = rgb_to_hsv(x)
    return clip255(hsv_to_rgb(h, (s * a + b).clamp(0, 1), v))


@corruption("pixelate", random=False)
def pixelate(x: Tensor, factor: float, rng: ImageRandom) -> Tensor:
    """PIL BOX resize to int(side * factor), then BOX resize back (8-bit arithmetic as Pillow)."""
    h, w = x.shape[-2:]
    v = torch.round(x * 255)
    small = pil_resize_box(v, int(h * factor), int(w * factor))
    return pil_resize_box(small, h, w).to(x.dtype)


def _pil_roundtrip(images: np.ndarray, quality: int) -> np.ndarray:
    """PIL JPEG save at `quality` and reload, per image of (B, H, W, 3) uint8 (the reference)."""
    out = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf)))
    return np.stack(out)


def _torchvision_roundtrip(images: np.ndarray, quality: int) -> np.ndarray:
    """The same round trip through torchvision's libjpeg bindings: one C++ call per batch."""
    from torchvision.io import decode_jpeg, encode_jpeg

    chw = list(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))
    decoded = decode_jpeg(encode_jpeg(chw, quality=quality))
    return torch.stack(decoded).permute(0, 2, 3, 1).numpy()


@functools.cache
def jpeg_codec() -> str:
    """'torchvision' when its codec gives PIL's bytes, else 'pil'.

    Both wrap libjpeg(-turbo) with the same defaults (4:2:0 chroma, islow DCT, quality-scaled
    standard tables); on 1,000 CIFAR-10 test images at nine qualities the two agreed on every
    byte, and torchvision took 3.5x less CPU (no per-image Python and PIL objects). A build
    whose libjpeg differs would change the output, so the choice is checked once per process
    on a fixed noise image at two qualities and falls back to PIL on any difference, or
    when torchvision no longer has the codec (deprecated there since 0.29).
    """
    probe = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    try:
        same = all(np.array_equal(_torchvision_roundtrip(probe, q), _pil_roundtrip(probe, q))
                   for q in (15, 80))
    except (ImportError, AttributeError, RuntimeError):  # no image codec in this torchvision
        same = False
    return "torchvision" if same else "pil"


@corruption("jpeg_compression", random=False)
def jpeg_compression(x: Tensor, quality: int, rng: ImageRandom) -> Tensor:
    """JPEG save at `quality` and reload, as the reference does with PIL, on the CPU (on
    CUDA the batch goes to the CPU and back: the GPU codec is not libjpeg)."""
    images = torch.round(x * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    roundtrip = _torchvision_roundtrip if jpeg_codec() == "torchvision" else _pil_roundtrip
    out = roundtrip(images, int(quality))
    return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype)


@corruption("elastic_transform", random=True)
def elastic_transform(x: Tensor, params: tuple[float, float, float], rng: ImageRandom) -> Tensor:
    """A random affine warp, then a smooth random displacement field, bilinear resampling.

    params, in multiples of the image side: (alpha, sigma, affine). Three points around the
    centre, at +-side//3, move by U(-affine, affine) pixels each coordinate; OpenCV warps the
    image to match (border reflect-101). Then each pixel is read at (y + dy, x + dx) with dx, dy
    = alpha * (U(-1, 1) noise blurred with sigma, border reflect, truncate 3), bilinear,
    border reflect.
    """
    x = x.to(torch.float32)  # the reference warps float32 images
    n, _, h, w = x.shape
    side = h
    alpha, sigma, affine = (float(p) * side for p in params)
    draws = rng.uniform(6 + 2 * h * w, dtype=torch.float64)
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64)
    square = min(h, w) // 3
    src = torch.stack([centre + square, torch.stack([centre[0] + square, centre[1] - square]),
                       centre - square]).to(torch.float32)
    jitter = ((draws[:, :6] * 2 - 1) * affine).to(torch.float32).view(n, 3, 2)
    dst = src.to(x.device).unsqueeze(0) + jitter
    warped = affine_warp(x, affine_from_points(src.to(x.device).expand(n, 3, 2), dst))
    # As the reference: blurred in float64 (as a matrix product per axis: the blur is as wide
    # as a small image, where 1-D taps cost far more), times alpha, then kept as float32.
    fields = (draws[:, 6:] * 2 - 1).view(n, 2, h, w)
    fields = (gaussian_filter_matrix(fields, sigma, "symmetric", truncate=3.0) * alpha
              ).to(torch.float32) if sigma > 1e-15 else (fields * alpha).to(torch.float32)
    if alpha == 0:  # no displacement: sampling at the pixel centres returns the image exactly
        return clip255(warped)
    dx, dy = fields[:, 0].to(torch.float64), fields[:, 1].to(torch.float64)
    rows = torch.arange(h, dtype=torch.float64, device=x.device).view(1, h, 1) + dy
    cols = torch.arange(w, dtype=torch.float64, device=x.device).view(1, 1, w) + dx
    return clip255(sample_bilinear(warped, rows, cols, "symmetric"))
