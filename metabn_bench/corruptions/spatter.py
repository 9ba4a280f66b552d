"""Spatter (an extra corruption of Hendrycks & Dietterich 2019): water drops or mud, batched.

The water mode's drop outlines come from OpenCV's Canny edges, distance transform and histogram
equalisation of each image's liquid layer; those run per image with OpenCV on the CPU (the exact
reference functions), everything else on whole batches on the device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metabn_bench.corruptions.filters import gaussian_filter
from metabn_bench.corruptions.registry import clip255, corruption
from metabn_bench.corruptions.rng import ImageRandom
from metabn_bench.corruptions.textures import require_cv2

# The reference adds the water colour (175, 238, 238) / 255 to an RGB image as if it were BGR,
# so 175 lands on red; mud is (63, 42, 20) / 255 in RGB.
WATER = (175 / 255, 238 / 255, 238 / 255)
MUD = (63 / 255, 42 / 255, 20 / 255)


def water_outline(liquid_u8: np.ndarray) -> np.ndarray:
    """The reference's per-image drop shading from an 8-bit liquid layer (H, W) -> float32 (H, W):
    inverted Canny edges, L2 distance transform (5x5 mask), truncated at 20, box blur, 8 bits,
    histogram equalisation, a diagonal emboss kernel, box blur."""
    cv2 = require_cv2()
    dist = 255 - cv2.Canny(liquid_u8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = cv2.filter2D(dist, cv2.CV_8U, emboss)
    return cv2.blur(dist, (3, 3)).astype(np.float32)


@corruption("spatter", random=True)
def spatter(x: Tensor, params: tuple[float, ...], rng: ImageRandom) -> Tensor:
    """Water drops (mode 0) or mud (mode 1) from a thresholded, blurred N(mean, std) layer.

    params: (mean, std, blur sigma, threshold, intensity, mode). Water: the layer (8 bits) times
    its drop shading, normalised to its maximum and scaled by the intensity, adds the water
    colour. Mud: the thresholded layer blurred with sigma = intensity, kept where >= 0.8,
    replaces the image by mud colour in proportion.
    """
    mean, std, sigma, threshold, intensity, mode = (float(p) for p in params)
    x = x.to(torch.float32)  # the reference works on float32 images
    n, _, h, w = x.shape
    liquid = rng.normal(1, h, w, dtype=torch.float64) * std + mean
    liquid = gaussian_filter(liquid, sigma, "edge")
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mode == 0:
        # np.uint8 of the float layer: truncation (values above 255 wrap around, as in NumPy).
        layer = torch.remainder(torch.floor(liquid * 255), 256)
        layer_np = layer[:, 0].to("cpu", torch.uint8).numpy()
        shading = np.stack([water_outline(layer_np[i]) for i in range(n)])
        m = layer[:, 0].to(torch.float32) * torch.from_numpy(shading).to(x.device)
        peak = m.amax((1, 2), keepdim=True)
        m = torch.where(peak > 0, m / torch.where(peak > 0, peak, torch.ones_like(peak)),
                        torch.zeros_like(m)) * intensity
        colour = torch.tensor(WATER, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return clip255(x + m.unsqueeze(1).to(x.dtype) * colour)
    mask = (liquid > threshold).to(torch.float32)
    mask = gaussian_filter(mask, intensity, "edge")
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask).to(x.dtype)
    colour = torch.tensor(MUD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return clip255(x * (1 - mask) + colour * mask)
