"""ImageNet-C-bar: its five own ops against a per-image computation of the reference formula from
the same draws, the ranges and statistics its parameters fix, per-image seeding, its table and
how `corrupt` chooses it, and the set made through the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from metabn_bench.cli import app
from metabn_bench.corruptions import cbar_caustic, cbar_textures, tables
from metabn_bench.corruptions.generate import corrupt_images
from metabn_bench.corruptions.names import CBAR, CBAR_CIFAR, CBAR_IMAGENET
from metabn_bench.corruptions.rng import ImageRandom
from metabn_bench.data.synthetic import make_split
from metabn_bench.errors import UserError
from metabn_bench.reporting.metrics import cells_frame, summary_rows
from tests import cbar_imagenet_reference as ref
from tests.helpers import (
    assert_seeded_per_image,
    cli_ok,
    evaluate_copy_and_summarise,
    uniform_cell_rows,
)

CPU = torch.device("cpu")
LEVELS = tables.CBAR_TABLES["imagenet"]
OWN = [n for n in CBAR_IMAGENET if n not in CBAR_CIFAR]

DRAWS = {
    "single_frequency_greyscale":
        lambda rng, size: cbar_textures.draw_single_frequency_greyscale(rng),
    "cocentric_sine_waves": cbar_textures.draw_cocentric_sine_waves,
    "plasma_noise": cbar_textures.draw_plasma_noise,
    "perlin_noise": lambda rng, size: cbar_textures.draw_perlin_noise(rng),
    "caustic_refraction": cbar_caustic.draw_caustic_refraction,
}


def _per_image(draws: dict[str, torch.Tensor], i: int) -> dict[str, Any]:
    return {k: v[i].numpy() for k, v in draws.items()}


@pytest.mark.parametrize("name", OWN)
def test_every_own_op_matches_the_per_image_formula(name: str) -> None:
    # the per-pixel Python references are slow: two small images; 24 pixels is not the native
    # side, so every parameter that scales with the side is exercised
    images = make_split("test", 2).images[:, :24, :24]
    for severity in ((1, 5) if name == "caustic_refraction" else (1, 3, 5)):
        level = LEVELS[name][severity - 1]
        ours = corrupt_images(images, name, severity, level, 0, CPU)
        rng = ImageRandom(0, name, severity, range(len(images)), CPU)
        draws = DRAWS[name](rng, images.shape[1])
        expected = np.stack([ref.REFERENCE[name](im, level, _per_image(draws, i))
                             for i, im in enumerate(images)])
        diff = np.abs(ours.astype(int) - expected)
        # identical but for transcendental functions rounding in the last bit (torch against
        # NumPy), which can move a value across an integer before truncation
        assert diff.max() <= 1, (name, severity, diff.max())
        assert (diff > 0).mean() < 0.002, (name, severity, (diff > 0).mean())


@pytest.mark.parametrize("name", OWN)
def test_output_depends_only_on_seed_and_index(name: str) -> None:
    assert_seeded_per_image(make_split("test", 6).images[:, :16, :16], name, LEVELS[name][2])


def test_random_parameters_follow_the_reference_ranges() -> None:
    rng = ImageRandom(5, "x", 1, range(2000), CPU)
    sf = cbar_textures.draw_single_frequency_greyscale(rng)
    f = sf["freq"].abs()
    # one frequency uniform in (-pi, pi), the other within it, in either order (about half each)
    assert f.max() < np.pi and (f.min(dim=1).values <= f.max(dim=1).values).all()
    first_larger = (f[:, 0] >= f[:, 1]).double().mean().item()
    assert first_larger == pytest.approx(0.5, abs=0.05)
    assert f.max(dim=1).values.mean().item() == pytest.approx(np.pi / 2, rel=0.05)
    assert sf["phase"].min() >= 0 and sf["phase"].max() < 2 * np.pi
    waves = cbar_textures.draw_cocentric_sine_waves(rng, 224)
    assert waves["offset"].max() < 224 and waves["freq"].max() < 10
    assert waves["amplitude"].max() < 22.4 and waves["ring_width"].mean().item() == \
        pytest.approx(11.2, rel=0.05)
    plasma = cbar_textures.draw_plasma_noise(rng, 224)
    assert set(plasma["iterations"].tolist()) == {4, 5, 6}
    assert plasma["time"].max() < 6 * np.pi and plasma["sharpness"].min() >= 0.5
    assert plasma["scale"].min() >= 0.075 * 224 and plasma["scale"].max() < 0.2 * 224
    caustic = cbar_caustic.draw_caustic_refraction(rng, 224)
    assert caustic["time"].min() >= 0.5 and caustic["time"].max() < 2.0
    assert caustic["period"].min() >= 0.75 * 224 and caustic["period"].max() < 1.25 * 224


def test_perlin_tables_are_a_permutation_and_unit_gradients() -> None:
    d = cbar_textures.draw_perlin_noise(ImageRandom(0, "perlin_noise", 1, range(50), CPU))
    g, perm = cbar_textures.perlin_tables(d["gradients"], d["swaps"])
    assert (perm[:, :256].sort(dim=1).values == torch.arange(256)).all()
    assert torch.equal(perm[:, 256:], perm[:, :256])
    norms = g.norm(dim=-1)
    assert torch.allclose(norms[norms > 0], torch.ones(1, dtype=torch.float64))
    # the swap targets and gradient draws are uniform over their ranges
    assert d["swaps"].double().mean().item() == pytest.approx(127.5, rel=0.02)
    assert d["gradients"].double().mean().item() == pytest.approx(255.5, rel=0.02)
    assert d["swaps"].max() == 255 and d["gradients"].max() == 511


def test_waves_add_what_the_level_sets() -> None:
    grey = np.full((200, 16, 16, 3), 128, np.uint8)
    level = LEVELS["single_frequency_greyscale"][0]
    out = corrupt_images(grey, "single_frequency_greyscale", 1, level, 0, CPU).astype(float)
    # a sine of amplitude 19.6 (196 level / 10), grey on every channel, never clipped at level 1
    assert np.abs(out - 128).max() <= 19.6 + 1
    assert (out[..., 0] == out[..., 2]).all()
    assert np.abs(out - 128).max(axis=(1, 2, 3)).mean() == pytest.approx(19.6, abs=1.5)
    level = LEVELS["cocentric_sine_waves"][0]
    out = corrupt_images(grey, "cocentric_sine_waves", 1, level, 0, CPU).astype(float)
    # a sawtooth from -1/2 to 1/2 times 38.4: uniform over the rings, std 38.4 / sqrt(12)
    assert (out - 128).std() == pytest.approx(38.4 / 12 ** 0.5, rel=0.1)


def test_plasma_and_perlin_stay_within_what_the_level_sets() -> None:
    grey = np.full((40, 16, 16, 3), 128, np.uint8)
    a = 6.4 * LEVELS["plasma_noise"][0]
    out = corrupt_images(grey, "plasma_noise", 1, LEVELS["plasma_noise"][0], 0, CPU)
    # (1 - a / 255) 128 + a sin(...): within +-a of the dimmed grey, reaching most of it
    dev = out.astype(float) - (1 - a / 255) * 128
    assert dev.min() >= -a - 1 and dev.max() <= a
    assert np.percentile(np.abs(dev), 99) > 0.8 * a
    black = np.zeros((40, 16, 16, 3), np.uint8)
    alpha = 0.05 * LEVELS["perlin_noise"][4]
    out = corrupt_images(black, "perlin_noise", 5, LEVELS["perlin_noise"][4], 0, CPU)
    # 255 alpha clip(0.5 turbulence + 0.5): turbulence is a sum of absolute values, so the
    # noise is at least one half; grey on every channel
    assert out.min() >= int(255 * alpha * 0.5) and out.max() <= 255 * alpha
    assert (out[..., 0] == out[..., 1]).all() and out.std() > 1


def test_the_table_and_how_auto_chooses_it() -> None:
    assert tuple(tables.cbar_table("imagenet")) == CBAR_IMAGENET
    assert all(len(v) == 5 for v in LEVELS.values())
    assert set(CBAR) == set(CBAR_CIFAR) | set(CBAR_IMAGENET) and len(CBAR) == 15
    assert tables.choose_preset("auto", 32, "c-bar")[0] == "cifar"
    assert tables.choose_preset("auto", 224, "c-bar") == (
        "imagenet", "-C-bar table 'imagenet' (auto: images are 224x224)")
    chosen, how = tables.choose_preset("auto", 64, "c-bar")
    assert chosen == "imagenet" and "no -C-bar table of that size was published" in how
    with pytest.raises(UserError, match="no -C-bar parameter table for 48x48"):
        tables.choose_preset("auto", 48, "c-bar")
    with pytest.raises(UserError, match="lines is not in the ImageNet-C-bar table; valid: "):
        tables.params("imagenet", "lines", 1)
    assert tables.table_hash("imagenet", "c-bar") != tables.table_hash("cifar", "c-bar")


def test_its_mean_covers_its_own_corruptions_never_the_mce() -> None:
    rows = uniform_cell_rows({"clean": 5.0, "fog": 30.0, "perlin_noise": 40.0,
                              "caustic_refraction": 60.0})
    rec = summary_rows(cells_frame(rows))[0]
    assert rec["mce"] == 30.0 and rec["cbar_error"] == 50.0
    assert rec["cbar_corruptions"] == ["caustic_refraction", "perlin_noise"]


def test_imagenet_cbar_set_through_the_cli(tmp_path: Path, trained_run: Path) -> None:
    out = tmp_path / "inbar"
    args = ["corrupt", "--dataset", "synthetic", "--out", str(out), "--n", "10", "--benchmark",
            "c-bar", "--preset", "imagenet", "--severities", "2", "--device", "cpu",
            "--no-progress"]
    cli_ok([*args, "--corruptions", "plasma_noise,sparkles"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["benchmark"] == "c-bar" and manifest["preset"] == "imagenet"
    assert manifest["param_table_sha256"] == tables.table_hash("imagenet", "c-bar")
    assert np.load(out / "plasma_noise.npy").shape == (10, 32, 32, 3)
    bad = CliRunner().invoke(app, [*args[:4], str(tmp_path / "other"), *args[5:],
                                   "--corruptions", "ripple"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "ripple is not in the ImageNet-C-bar table" in bad.output
    row = evaluate_copy_and_summarise(trained_run, out, tmp_path)
    assert row["cbar_corruptions"] == ["sparkles", "plasma_noise"] and row["corruptions"] == []
