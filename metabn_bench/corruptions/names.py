"""Corruption names, groups and their canonical order (the order of every table).

Hendrycks & Dietterich (ICLR 2019), "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations": 15 common corruptions in four groups, plus 4 extra
("validation") corruptions that are never part of a headline number.
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
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def group_of(name: str) -> str:
    """The group ('noise', 'blur', 'weather', 'digital' or 'extra') of a corruption."""
    for group, names in GROUPS.items():
        if name in names:
            return group
    return "extra"


def canonical_order(names: list[str] | tuple[str, ...]) -> list[str]:
    """`names` sorted in the papers' order (unknown names last, alphabetically)."""
    rank = {n: i for i, n in enumerate(ALL)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))
