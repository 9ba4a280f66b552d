"""Random corruptions: statistics their parameters fix, per-image seeding, severity ordering."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from metabn_bench.corruptions import ALL, tables
from metabn_bench.corruptions.generate import corrupt_images
from metabn_bench.corruptions.ops import CORRUPTIONS
from metabn_bench.corruptions.spatter import WATER
from metabn_bench.corruptions.textures import frost_bank
from metabn_bench.data.synthetic import make_split

CPU = torch.device("cpu")
CIFAR = tables.table("cifar")


def _grey(n: int, value: int = 128, size: int = 32) -> np.ndarray:
    return np.full((n, size, size, 3), value, np.uint8)


def _run(images: np.ndarray, name: str, severity: int, preset: str = "cifar", seed: int = 0,
         batch_size: int = 500) -> np.ndarray:
    return corrupt_images(images, name, severity, tables.params(preset, name, severity), seed, CPU,
                          batch_size)


@pytest.mark.parametrize("name", [n for n in ALL if CORRUPTIONS.get(n).random])
def test_random_output_depends_only_on_seed_and_index(name: str) -> None:
    images = make_split("test", 12).images
    whole = _run(images, name, 3)
    np.testing.assert_array_equal(whole, _run(images, name, 3, batch_size=5))
    np.testing.assert_array_equal(whole[7:], corrupt_images(
        images[7:], name, 3, tables.params("cifar", name, 3), 0, CPU, start_index=7))
    assert not np.array_equal(whole, _run(images, name, 3, seed=1))


def test_noise_std_and_impulse_fraction_follow_the_table() -> None:
    images = _grey(24)
    for severity in range(1, 6):
        out = _run(images, "gaussian_noise", severity).astype(float)
        # truncation shifts the mean by 0.5; the std is the table's
        assert (out - 127.5).std() / 255 == pytest.approx(CIFAR["gaussian_noise"][severity - 1], rel=0.03)
        photons = CIFAR["shot_noise"][severity - 1]
        out = _run(images, "shot_noise", severity).astype(float) / 255
        assert out.std() == pytest.approx(np.sqrt((128 / 255) / photons), rel=0.05)
        out = _run(images, "speckle_noise", severity).astype(float)
        assert (out - 127.5).std() / 128 == pytest.approx(CIFAR["speckle_noise"][severity - 1], rel=0.04)
        amount = CIFAR["impulse_noise"][severity - 1]
        out = _run(images, "impulse_noise", severity)
        assert (out == 255).mean() == pytest.approx(amount / 2, rel=0.15)
        assert (out == 0).mean() == pytest.approx(amount / 2, rel=0.15)
        assert ((out == 0) | (out == 255) | (out == 128)).all()


def test_glass_blur_offsets_are_uniform_on_minus_delta_to_delta_minus_one() -> None:
    # An image whose every pixel is distinct; sigma 0.05 leaves it unblurred (radius 0 filter).
    values = np.arange(32 * 32).reshape(32, 32)
    image = np.stack([values % 256, values // 256, np.zeros_like(values)], -1).astype(np.uint8)
    out = corrupt_images(image[None].repeat(16, 0), "glass_blur", 1, (0.05, 1, 1), 0, CPU)
    src = out[..., 0].astype(int) + 256 * out[..., 1].astype(int)
    rows, cols = np.divmod(src[:, 2:32, 2:32], 32)  # scanned pixels (rows/cols 2..31)
    dy = rows - np.arange(2, 32).reshape(1, 30, 1)
    dx = cols - np.arange(2, 32).reshape(1, 1, 30)
    counts = {(a, b): ((dy == a) & (dx == b)).mean() for a in (-1, 0) for b in (-1, 0)}
    assert sum(counts.values()) == pytest.approx(1.0)  # offsets only in [-1, 0]
    for share in counts.values():
        assert share == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_fog_amplitude_bounds_a_flat_image(preset: str) -> None:
    # On a flat grey g: out = (g + a * plasma) * g / (g + a), plasma spanning [0, 1] per image.
    g = 128 / 255
    for severity in range(1, 6):
        a = tables.params(preset, "fog", severity)[0]
        out = _run(_grey(8), "fog", severity, preset).astype(float)
        assert out.reshape(8, -1).max(1) == pytest.approx(np.full(8, np.floor(g * 255)), abs=1)
        assert out.reshape(8, -1).min(1) == pytest.approx(np.full(8, g * g / (g + a) * 255), abs=1)


def test_frost_on_black_is_a_scaled_texture_crop() -> None:
    bank, sizes = frost_bank(0.2, 32, 32, CPU)
    for severity in (1, 5):
        b = CIFAR["frost"][severity - 1][1]
        out = _run(_grey(3, 0), "frost", severity)
        for image in out:
            found = False
            for t, (th, tw) in enumerate(sizes.tolist()):
                crops = bank[t, :, :th, :tw].unfold(1, 32, 1).unfold(2, 32, 1)
                scaled = torch.floor((b * crops).clamp(0, 255)).permute(1, 2, 3, 4, 0)
                hit = (scaled == torch.from_numpy(image).float()).flatten(2).all(-1)
                found = found or bool(hit.any())
            assert found


def test_snow_blend_and_spatter_colours_follow_the_table() -> None:
    for severity in range(1, 6):
        blend = CIFAR["snow"][severity - 1][6]
        out = _run(_grey(8, 0), "snow", severity)
        # where no flake falls, black becomes (1 - blend) * max(0, 0 * 1.5 + 0.5)
        assert out.min() == np.floor((1 - blend) * 0.5 * 255)
        assert (out == out.min()).mean() > 0.2
    water = _run(_grey(8, 0), "spatter", 1).astype(float)
    wet = water.sum(-1) > 30
    ratios = water[wet] / water[wet].sum(-1, keepdims=True)
    # the water colour lands on swapped channels, as in the reference: 175 on red
    assert ratios.mean(0) == pytest.approx(np.array(WATER) / sum(WATER), abs=0.02)
    mud = _run(_grey(8, 255), "spatter", 5).astype(float)
    muddy = mud.sum(-1) < 600
    assert muddy.any() and (mud[muddy][:, 0] >= mud[muddy][:, 2]).all()


def _strength(clean: np.ndarray, out: np.ndarray, name: str) -> float:
    """How far a corrupted set is from the clean one, by the measure the parameters order."""
    a, b = clean.astype(float), out.astype(float)
    if name == "saturate":
        return float(np.abs(b.std(-1) - a.std(-1)).mean())  # change of colourfulness
    return float(np.abs(b - a).mean())


# The severities over which the reference's own table is ordered by the measure above; where a
# table changes direction (saturate desaturates at 1-2 and saturates at 3-5) or mode (spatter:
# water at 1-3, mud at 4-5), each monotone run is checked on its own. glass_blur, frost and
# elastic_transform are not ordered by any pixel distance in the reference tables (glass: more
# blur at one iteration brings the image closer; frost: the random texture outweighs the 0.05
# steps of image weight; elastic: severity 1 is a pure affine jitter of 0.08 x side, larger than
# the later local warps), see docs/corruptions.md; for them the table's own order is checked.
RUNS = {"saturate": [(1, 2), (3, 4, 5)], "spatter": [(1, 2, 3), (4, 5)]}
TABLE_ORDERED = ("glass_blur", "frost", "elastic_transform")


def test_table_order_of_the_corruptions_not_ordered_by_pixel_distance() -> None:
    for preset in tables.TABLES:
        glass = tables.table(preset)["glass_blur"]
        assert [g[1] * g[2] for g in glass] == sorted(g[1] * g[2] for g in glass)  # reach
        frost = tables.table(preset)["frost"]
        assert [f[0] for f in frost] == sorted((f[0] for f in frost), reverse=True)
        assert [f[1] for f in frost] == sorted(f[1] for f in frost)
        elastic = tables.table(preset)["elastic_transform"]
        assert [e[2] for e in elastic][1:] == sorted((e[2] for e in elastic[1:]), reverse=True)


@pytest.mark.parametrize("name", [n for n in ALL if n not in TABLE_ORDERED])
def test_every_corruption_gets_stronger_with_severity(name: str) -> None:
    images = make_split("test", 16).images
    strength = {s: _strength(images, _run(images, name, s), name) for s in range(1, 6)}
    for run in RUNS.get(name, [(1, 2, 3, 4, 5)]):
        values = [strength[s] for s in run]
        assert all(b > a for a, b in itertools.pairwise(values)), (name, strength)
