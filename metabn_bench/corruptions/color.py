"""Colour conversions of the reference: scikit-image's HSV and OpenCV's grey, batched (B, 3, H, W)."""

from __future__ import annotations

import torch
from torch import Tensor


def rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """skimage.color.rgb2hsv on (B, 3, H, W) in [0, 1] as three (B, H, W) planes (h, s, v): the
    same formulas and tie rules (when channels tie for the maximum, blue wins over green over
    red). Planes, not a stacked tensor: the stack and the gather back cost as much as the maths."""
    r, g, b = x.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    delta = v - torch.minimum(torch.minimum(r, g), b)
    flat = delta == 0
    safe = torch.where(flat, 1.0, delta)
    s = torch.where(flat, 0.0, delta / torch.where(v == 0, 1.0, v))
    h = torch.where(b == v, 4.0 + (r - g) / safe,
                    torch.where(g == v, 2.0 + (b - r) / safe,
                                torch.where(r == v, (g - b) / safe, 0.0)))
    h = torch.remainder(h / 6.0, 1.0)
    return torch.where(flat, 0.0, h), s, v


def hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """skimage.color.hsv2rgb of (B, H, W) planes -> (B, 3, H, W): each channel takes v, q, p or
    t by the hue's sector (0-5), as scikit-image's table does."""
    h6 = h * 6
    hi = torch.floor(h6)
    f = h6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = torch.remainder(hi.to(torch.int64), 6)
    red = torch.where((sector == 0) | (sector == 5), v,
                      torch.where(sector == 1, q, torch.where(sector == 4, t, p)))
    green = torch.where((sector == 1) | (sector == 2), v,
                        torch.where(sector == 0, t, torch.where(sector == 3, q, p)))
    blue = torch.where((sector == 3) | (sector == 4), v,
                       torch.where(sector == 2, t, torch.where(sector == 5, q, p)))
    return torch.stack([red, green, blue], 1)


def rgb_to_gray(x: Tensor) -> Tensor:
    """cv2.cvtColor(RGB2GRAY) of float images: 0.299 R + 0.587 G + 0.114 B, (B, 1, H, W)."""
    r, g, b = x.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)
