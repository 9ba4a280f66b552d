"""Colour conversions of the reference: scikit-image's HSV and OpenCV's grey, batched (B, 3, H, W)."""

from __future__ import annotations

import torch
from torch import Tensor


def rgb_to_hsv(x: Tensor) -> Tensor:
    """skimage.color.rgb2hsv on (B, 3, H, W) in [0, 1]: the same formulas and tie rules
    (when channels tie for the maximum, blue wins over green over red)."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    h = torch.zeros_like(v)
    h = torch.where(r == v, (g - b) / safe, h)
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([h, s, v], 1)


# Which of (v, q, p, t) each RGB channel takes in each of the six hue sectors (scikit-image).
_SECTOR_SOURCES = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]])


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """skimage.color.hsv2rgb on (B, 3, H, W)."""
    h, s, v = hsv.unbind(1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = torch.remainder(hi.to(torch.int64), 6)
    index = _SECTOR_SOURCES.to(hsv.device)[sector].permute(0, 3, 1, 2)
    return torch.stack([v, q, p, t], 1).gather(1, index)


def rgb_to_gray(x: Tensor) -> Tensor:
    """cv2.cvtColor(RGB2GRAY) of float images: 0.299 R + 0.587 G + 0.114 B, (B, 1, H, W)."""
    r, g, b = x.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)
