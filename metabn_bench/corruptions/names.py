"""Corruption names, groups, benchmarks and their canonical order (the order of every table).

Hendrycks & Dietterich (ICLR 2019), "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations": 15 common corruptions in four groups, plus 4 extra
("validation") corruptions that are never part of a headline number. Mintun, Kirillov & Xie
(NeurIPS 2021), "On Interaction Between Augmentations and Corruptions in Natural Corruption
Robustness": the 10 corruptions of CIFAR-10-C-bar and the 10 of ImageNet-C-bar (5 in common),
chosen to be perceptually unlike -C; they form their own benchmark with its own mean, never part
of the -C mCE.
"""

from __future__ import annotations

GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
COMMON: tuple[str, ...] = tuple(name for names in GROUPS.values() for name in names)
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL: tuple[str, ...] = COMMON + EXTRA
# CIFAR-10-C-bar, in the order of the official table (cifar10_c_bar.csv); the spelling
# "abberation" is the official file name, kept so released sets read as they are.
CBAR_CIFAR: tuple[str, ...] = (
    "blue_noise_sample", "checkerboard_cutout", "inverse_sparkles", "pinch_and_twirl", "ripple",
    "brownish_noise", "circular_motion_blur", "lines", "sparkles",
    "transverse_chromatic_abberation")
# ImageNet-C-bar, in the order of the official table (imagenet_c_bar.csv); "cocentric" is the
# official spelling.
CBAR_IMAGENET: tuple[str, ...] = (
    "caustic_refraction", "inverse_sparkles", "sparkles", "perlin_noise", "blue_noise_sample",
    "plasma_noise", "checkerboard_cutout", "cocentric_sine_waves", "single_frequency_greyscale",
    "brownish_noise")
# Every -C-bar corruption: CIFAR-10-C-bar's order, then ImageNet-C-bar's own five.
CBAR: tuple[str, ...] = CBAR_CIFAR + tuple(n for n in CBAR_IMAGENET if n not in CBAR_CIFAR)
KNOWN: tuple[str, ...] = ALL + CBAR
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# --benchmark: which corruption set `corrupt` makes by default.
BENCHMARKS: dict[str, tuple[str, ...]] = {"c": COMMON, "c-bar": CBAR}


def benchmark_of(name: str) -> str:
    """'c-bar' for a -C-bar corruption, 'c' for the 19 of -C (common and extra)."""
    return "c-bar" if name in CBAR else "c"


def group_of(name: str) -> str:
    """The group ('noise', 'blur', 'weather', 'digital', 'extra' or 'c-bar') of a corruption."""
    for group, names in GROUPS.items():
        if name in names:
            return group
    return "c-bar" if name in CBAR else "extra"


def canonical_order(names: list[str] | tuple[str, ...]) -> list[str]:
    """`names` sorted in the papers' order (unknown names last, alphabetically)."""
    rank = {n: i for i, n in enumerate(KNOWN)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))
