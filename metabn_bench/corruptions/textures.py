"""The reference's frost textures, read once per process from the installed `imagecorruptions`
package (they are not redistributed here) and kept in memory per (scale, device)."""

from __future__ import annotations

import importlib.resources
import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from metabn_bench.errors import UserError

# The reference draws one of the first five textures (frost6 is listed but never chosen).
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
INSTALL_HINT = "pip install imagecorruptions-imaug"


def require_cv2():
    """The cv2 module, or a UserError naming the package that brings it."""
    try:
        import cv2
    except ImportError:
        raise UserError("this corruption needs OpenCV (a dependency of metabn-bench): "
                        "pip install opencv-python-headless") from None
    return cv2


@lru_cache(maxsize=1)
def frost_sources() -> tuple[np.ndarray, ...]:
    """The five textures as OpenCV reads them (BGR uint8), read once."""
    cv2 = require_cv2()
    try:
        folder = importlib.resources.files("imagecorruptions") / "frost"
    except ModuleNotFoundError:
        raise UserError(f"frost needs the reference frost textures of the imagecorruptions "
                        f"package; install it: {INSTALL_HINT}") from None
    images = []
    for name in FROST_FILES:
        with importlib.resources.as_file(folder / name) as path:
            image = cv2.imread(str(path))
        if image is None:
            raise UserError(f"cannot read frost texture {name} of the imagecorruptions package; "
                            f"reinstall it: {INSTALL_HINT}")
        images.append(image)
    return tuple(images)


@lru_cache(maxsize=8)
def _frost_bank_cpu(scale: float, height: int, width: int) -> tuple[Tensor, Tensor]:
    cv2 = require_cv2()
    scaled = []
    for image in frost_sources():
        s = scale
        # A texture smaller than the image cannot be cropped from: scale it up just enough.
        need = max((height + 1) / image.shape[0], (width + 1) / image.shape[1])
        if image.shape[0] * s < height + 1 or image.shape[1] * s < width + 1:
            s = math.ceil(need * 1000) / 1000
        resized = image if s == 1.0 else cv2.resize(image, (0, 0), fx=s, fy=s)
        scaled.append(resized[..., ::-1])  # BGR -> RGB
    hm = max(t.shape[0] for t in scaled)
    wm = max(t.shape[1] for t in scaled)
    bank = np.zeros((len(scaled), 3, hm, wm), dtype=np.float32)
    sizes = np.zeros((len(scaled), 2), dtype=np.int64)
    for i, t in enumerate(scaled):
        bank[i, :, :t.shape[0], :t.shape[1]] = t.transpose(2, 0, 1)
        sizes[i] = t.shape[:2]
    return torch.from_numpy(bank), torch.from_numpy(sizes)


_DEVICE_BANKS: dict[tuple[float, int, int, str], tuple[Tensor, Tensor]] = {}


def frost_bank(scale: float, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(textures (5, 3, Hmax, Wmax) float RGB 0..255 zero-padded, sizes (5, 2)) on `device`,
    resized by `scale` with cv2.resize (bilinear) as the reference does."""
    key = (float(scale), height, width, str(device))
    if key not in _DEVICE_BANKS:
        bank, sizes = _frost_bank_cpu(float(scale), height, width)
        _DEVICE_BANKS[key] = (bank.to(device), sizes.to(device))
    return _DEVICE_BANKS[key]
