"""Parameter tables of the reference generator, one per image-size preset.

Source: Hendrycks & Dietterich's generator (hendrycks/robustness, ImageNet-C/create_c), whose
CIFAR-10-C / CIFAR-100-C (32x32), Tiny-ImageNet-C (64x64) and ImageNet-C (224x224) scripts carry
their own tables; the `imagecorruptions` package implements the ImageNet-C values. Each entry
lists the parameters of severities 1..5; the meaning of each number is documented with the
corruption's function. `params` adds the size settings that are not per severity.
"""

from __future__ import annotations

import json
from typing import Any

from metabn_bench.errors import UserError
from metabn_bench.fsio import sha256_text

Table = dict[str, list[Any]]

CIFAR: Table = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [(1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                          (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],  # times the image size
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1],
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
}

TINYIMAGENET: Table = {
    "gaussian_noise": [0.04, 0.08, 0.12, 0.15, 0.18],
    "shot_noise": [250, 100, 50, 30, 15],
    "impulse_noise": [0.01, 0.02, 0.05, 0.08, 0.14],
    "defocus_blur": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
    "glass_blur": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
    "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
    "zoom_blur": [(1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
    "frost": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
    "fog": [(0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06),
                          (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)],  # times the image size
    "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
    "jpeg_compression": [65, 58, 50, 40, 25],
    "speckle_noise": [0.15, 0.2, 0.25, 0.3, 0.35],
    "gaussian_blur": [0.5, 0.75, 1, 1.25, 1.5],
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0),
                (0.65, 0.3, 1, 0.69, 0.6, 0), (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
}

# ImageNet-C's elastic parameters are multiples of 244 pixels on 224-pixel images (a slip the
# reference's authors note as harmless); as fractions of the image side they are 244/224 times these.
_IN = 244 / 224

IMAGENET: Table = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "zoom_blur": [(1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)],
    "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
    "elastic_transform": [(2 * _IN, 0.7 * _IN, 0.1 * _IN), (2 * _IN, 0.08 * _IN, 0.2 * _IN),
                          (0.05 * _IN, 0.01 * _IN, 0.02 * _IN), (0.07 * _IN, 0.01 * _IN, 0.02 * _IN),
                          (0.12 * _IN, 0.01 * _IN, 0.02 * _IN)],  # times the image size
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
    "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],
    "gaussian_blur": [1, 2, 3, 4, 6],
    "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                (0.67, 0.4, 1, 0.65, 1.5, 1)],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
}

# Size-specific settings that are not per-severity: the side of the fog plasma map (0: the next
# power of two of the image side, 256 at 224 as in ImageNet-C) and the frost texture scale.
EXTRAS: dict[str, dict[str, Any]] = {
    "cifar": {"fog_map_size": 32, "frost_resize": 0.2},
    "tinyimagenet": {"fog_map_size": 64, "frost_resize": 0.3},
    "imagenet": {"fog_map_size": 0, "frost_resize": 1.0},
}

TABLES: dict[str, Table] = {"cifar": CIFAR, "tinyimagenet": TINYIMAGENET, "imagenet": IMAGENET}

# CIFAR-10-C-bar (Mintun, Kirillov & Xie, NeurIPS 2021; the official repository's
# imagenet_c_bar/cifar10_c_bar.csv): each entry is the transform's level on its 0-10 scale
# for severities 1..5; every op turns a level into its parameters (see each op's docstring).
CBAR_CIFAR: Table = {
    "blue_noise_sample": [0.7, 1.4, 2.1, 3.5, 4.2],
    "checkerboard_cutout": [1.0, 2.0, 3.0, 4.0, 5.0],
    "inverse_sparkles": [1.0, 1.5, 2.5, 4.5, 5.0],
    "pinch_and_twirl": [5.5, 6.0, 6.5, 8.5, 10.0],
    "ripple": [5.5, 6.0, 6.5, 7.5, 8.0],
    "brownish_noise": [2.5, 4.0, 5.5, 6.5, 7.0],
    "circular_motion_blur": [2.8, 3.6, 4.4, 5.2, 6.0],
    "lines": [0.5, 1.0, 1.5, 2.0, 2.5],
    "sparkles": [0.7, 3.5, 5.6, 6.3, 7.0],
    "transverse_chromatic_abberation": [1.0, 2.0, 5.0, 9.0, 10.0],
}
# ImageNet-C-bar (the official repository's imagenet_c_bar/imagenet_c_bar.csv), levels for
# severities 1..5 at 224 x 224; the ops scale every size-bound parameter with the image side as
# the reference does with its im_size. No Tiny-ImageNet-C-bar table was published: at 64 x 64 the
# ImageNet-C-bar table runs scaled to the image side (choose_preset says so).
CBAR_IMAGENET: Table = {
    "caustic_refraction": [2.35, 3.2, 4.9, 6.6, 9.15],
    "inverse_sparkles": [1.0, 2.0, 4.0, 9.0, 10.0],
    "sparkles": [1.0, 2.0, 3.0, 5.0, 6.0],
    "perlin_noise": [4.6, 5.2, 5.8, 7.6, 8.8],
    "blue_noise_sample": [0.8, 1.6, 2.4, 4.0, 5.6],
    "plasma_noise": [4.75, 7.0, 8.5, 9.25, 10.0],
    "checkerboard_cutout": [2.0, 3.0, 4.0, 5.0, 6.0],
    "cocentric_sine_waves": [3.0, 5.0, 8.0, 9.0, 10.0],
    "single_frequency_greyscale": [1.0, 1.5, 2.0, 4.5, 5.0],
    "brownish_noise": [1.0, 2.0, 3.0, 4.0, 5.0],
}
CBAR_TABLES: dict[str, Table] = {"cifar": CBAR_CIFAR, "imagenet": CBAR_IMAGENET}
# -C-bar table -> the sizes `--preset auto` picks it for (64: scaled, no table of its own).
CBAR_AUTO: dict[int, str] = {32: "cifar", 64: "imagenet", 224: "imagenet"}
CBAR_NAMES = {"cifar": "CIFAR-10-C-bar", "imagenet": "ImageNet-C-bar"}
NATIVE_SIZE = {"cifar": 32, "tinyimagenet": 64, "imagenet": 224}


def table(preset: str) -> Table:
    """The parameter table of a size preset."""
    if preset not in TABLES:
        raise UserError(f"unknown size preset '{preset}'; valid: auto, {', '.join(TABLES)}")
    return TABLES[preset]


def cbar_table(preset: str) -> Table:
    """The -C-bar table of a size preset; a UserError where none exists."""
    if preset not in CBAR_TABLES:
        raise UserError(f"no -C-bar parameter table for size preset '{preset}'; valid: "
                        f"{', '.join(CBAR_TABLES)} (CIFAR-10-C-bar, ImageNet-C-bar)")
    return CBAR_TABLES[preset]


def table_hash(preset: str, benchmark: str = "c") -> str:
    """sha256 of the preset's table (and size settings), recorded in every manifest; for
    benchmark 'c-bar' the -C-bar table's."""
    if benchmark == "c-bar":
        return sha256_text(json.dumps({"cbar_table": cbar_table(preset)}, sort_keys=True))
    payload = {"table": table(preset), "extras": EXTRAS.get(preset, {})}
    return sha256_text(json.dumps(payload, sort_keys=True))


def params(preset: str, name: str, severity: int) -> Any:
    """The parameters an op receives for (preset, corruption, severity): the table entry, with
    the size settings appended for fog (map size) and frost (texture scale); a -C-bar
    corruption's level from the -C-bar table."""
    if name in CBAR_CIFAR or name in CBAR_IMAGENET:
        levels = cbar_table(preset)
        if name not in levels:
            raise UserError(f"{name} is not in the {CBAR_NAMES[preset]} table; valid: "
                            f"{', '.join(levels)}")
        return levels[name][severity - 1]
    entry = table(preset)[name][severity - 1]
    extras = EXTRAS[preset]
    if name == "fog":
        return (*entry, extras["fog_map_size"])
    if name == "frost":
        return (*entry, extras["frost_resize"])
    return entry


def choose_preset(preset: str, image_size: int, benchmark: str = "c") -> tuple[str, str]:
    """Resolve 'auto' by image size; return (preset, a sentence saying how it was chosen).

    For -C-bar, 'auto' picks CIFAR-10-C-bar's table for 32x32 images and ImageNet-C-bar's for
    224x224 and, scaled to the image side as the reference's ops scale, for 64x64
    (Tiny-ImageNet: no table of its own was published); other sizes must name one."""
    if benchmark == "c-bar":
        if preset == "auto" and image_size not in CBAR_AUTO:
            raise UserError(f"no -C-bar parameter table for {image_size}x{image_size} images "
                            f"(CIFAR-10-C-bar is 32x32, ImageNet-C-bar 224x224, also used at "
                            f"64x64); name one with --preset ({', '.join(CBAR_TABLES)})")
        chosen = CBAR_AUTO[image_size] if preset == "auto" else preset
        cbar_table(chosen)
        if preset != "auto":
            how = "named"
        elif image_size == NATIVE_SIZE[chosen]:
            how = f"auto: images are {image_size}x{image_size}"
        else:
            how = (f"auto: images are {image_size}x{image_size}; no -C-bar table of that size "
                   f"was published, so {CBAR_NAMES[chosen]}'s, scaled to the image side")
        return chosen, f"-C-bar table '{chosen}' ({how})"
    if preset != "auto":
        table(preset)
        return preset, f"size preset '{preset}' (named)"
    for name, size in NATIVE_SIZE.items():
        if size == image_size:
            return name, f"size preset '{name}' (auto: images are {image_size}x{image_size})"
    raise UserError(
        f"no parameter table for {image_size}x{image_size} images; name one with --preset "
        f"({', '.join(TABLES)})")
