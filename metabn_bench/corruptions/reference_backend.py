"""`--backend imagecorruptions`: the same corrupted set made by the `imagecorruptions` package.

That package (the maintained fork `imagecorruptions-imaug`) implements the ImageNet-C table at
any image size, one image at a time with NumPy's global random generator. Here every image's
generator is seeded from (seed, corruption, severity, index), as in the torch engine, so its
output is reproducible too (the two engines draw different random numbers, so random
corruptions agree in distribution, deterministic ones image by image).
"""

from __future__ import annotations

from importlib import metadata
from types import ModuleType
from typing import Any

import numpy as np

from metabn_bench.errors import UserError
from metabn_bench.seeding import derive_seed

PACKAGE = "imagecorruptions-imaug"
PRESET = "imagenet"
# These two take their own seed argument (a None seed draws fresh OS entropy in the package).
OWN_SEED = ("glass_blur", "impulse_noise")


def load() -> ModuleType:
    """The imagecorruptions module, or a UserError naming the package to install."""
    try:
        import imagecorruptions
    except ImportError as exc:
        raise UserError(f"--backend imagecorruptions needs the package: pip install {PACKAGE} "
                        f"({exc})") from None
    return imagecorruptions


def version() -> str:
    """The installed version of the imagecorruptions distribution ('absent' if none)."""
    for dist in (PACKAGE, "imagecorruptions"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def check_preset(preset: str) -> None:
    """The package implements only the ImageNet-C table: refuse the other presets."""
    if preset != PRESET:
        raise UserError(f"--backend imagecorruptions implements only the ImageNet-C table; "
                        f"got preset '{preset}', use --preset {PRESET} (or --backend torch)")


def corrupt_images(images: np.ndarray, name: str, severity: int, seed: int,
                   start_index: int = 0, progress: Any = None) -> np.ndarray:
    """Corrupt uint8 NHWC images (sides >= 32) one by one with the package; uint8 NHWC out."""
    package = load()
    if min(images.shape[1:3]) < 32:
        raise UserError("the imagecorruptions package needs images of at least 32x32 pixels")
    out = np.empty_like(images)
    for i, image in enumerate(images):
        image_seed = derive_seed(seed, name, severity, start_index + i) % (1 << 32)
        np.random.seed(image_seed)
        kwargs: dict[str, Any] = {"seed": image_seed} if name in OWN_SEED else {}
        out[i] = package.corrupt(np.ascontiguousarray(image), severity=severity,
                                 corruption_name=name, **kwargs)
        if progress is not None:
            progress.update(1)
    return out
