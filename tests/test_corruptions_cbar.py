"""CIFAR-10-C-bar: every op against a per-image computation of the reference formula from the same
draws, the statistics its parameters fix, per-image seeding, and the -C-bar set made, evaluated
and reported through the command line with its own mean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.stats import norm
from typer.testing import CliRunner

from metabn_bench.cli import app
from metabn_bench.corruptions import cbar_noise, cbar_sparkles, cbar_warp, tables
from metabn_bench.corruptions.generate import corrupt_images
from metabn_bench.corruptions.names import CBAR_CIFAR
from metabn_bench.corruptions.ops import CORRUPTIONS
from metabn_bench.corruptions.rng import ImageRandom
from metabn_bench.data.store import open_set
from metabn_bench.data.synthetic import make_split
from metabn_bench.reporting.metrics import cells_frame, summary_rows
from tests import cbar_reference as ref
from tests.helpers import (
    assert_seeded_per_image,
    cli_ok,
    evaluate_copy_and_summarise,
    uniform_cell_rows,
)

CPU = torch.device("cpu")
LEVELS = tables.CBAR_TABLES["cifar"]

DRAWS = {
    "blue_noise_sample": lambda rng, level, size: cbar_noise.draw_blue_noise_sample(rng, size),
    "brownish_noise": lambda rng, level, size: cbar_noise.draw_brownish_noise(rng, size),
    "checkerboard_cutout": lambda rng, level, size: cbar_noise.draw_checkerboard_cutout(rng, size),
    "lines": cbar_noise.draw_lines,
    "sparkles": cbar_sparkles.draw_sparkles,
    "inverse_sparkles": lambda rng, level, size: cbar_sparkles.draw_inverse_sparkles(rng, size),
    "pinch_and_twirl": lambda rng, level, size: cbar_warp.draw_pinch_and_twirl(rng, size),
    "ripple": lambda rng, level, size: cbar_warp.draw_ripple(rng, size),
    "circular_motion_blur": lambda rng, level, size: {},
    "transverse_chromatic_abberation":
        lambda rng, level, size: cbar_warp.draw_transverse_chromatic_abberation(rng),
}


SLOW_REFERENCES = ("pinch_and_twirl", "sparkles", "circular_motion_blur")


def _per_image(draws: dict[str, torch.Tensor], i: int) -> dict[str, Any]:
    return {k: v[i].numpy() for k, v in draws.items()}


@pytest.mark.parametrize("name", CBAR_CIFAR)
def test_every_op_matches_the_per_image_formula(name: str) -> None:
    # the per-pixel Python references are slow: two images (and two severities for the slowest)
    images = make_split("test", 2).images
    for severity in ((1, 5) if name in SLOW_REFERENCES else (1, 3, 5)):
        level = LEVELS[name][severity - 1]
        ours = corrupt_images(images, name, severity, level, 0, CPU)
        rng = ImageRandom(0, name, severity, range(len(images)), CPU)
        draws = DRAWS[name](rng, level, images.shape[1])
        expected = np.stack([ref.REFERENCE[name](im, level, _per_image(draws, i))
                             for i, im in enumerate(images)])
        diff = np.abs(ours.astype(int) - expected)
        # identical but for transcendental functions rounding in the last bit (torch against
        # NumPy), which can move a value across an integer before truncation
        assert diff.max() <= 1, (name, severity, diff.max())
        assert (diff > 0).mean() < 0.002, (name, severity, (diff > 0).mean())


def test_the_rotation_matrix_is_scipys_rotate() -> None:
    plane = np.random.default_rng(0).random((16, 16))
    for degrees in (-9.0, 0.0, 4.2):
        coeffs = ndimage.spline_filter(plane, 3, mode="constant")
        ours = (cbar_warp.rotation_matrix(16, degrees) @ coeffs.ravel()).reshape(16, 16)
        np.testing.assert_allclose(ours, ndimage.rotate(plane, degrees, reshape=False), atol=1e-12)


@pytest.mark.parametrize("name", [n for n in CBAR_CIFAR if CORRUPTIONS.get(n).random])
def test_output_depends_only_on_seed_and_index(name: str) -> None:
    assert_seeded_per_image(make_split("test", 6).images, name, LEVELS[name][2])


def _grey(n: int, value: int) -> np.ndarray:
    return np.full((n, 32, 32, 3), value, np.uint8)


def test_blue_noise_blackens_the_share_below_its_threshold() -> None:
    for severity in (1, 5):
        level = LEVELS["blue_noise_sample"][severity - 1]
        out = corrupt_images(_grey(40, 200), "blue_noise_sample", severity, level, 0, CPU)
        # the noise is a sum of many random-phase waves: close to N(0, 1) per pixel
        expected = norm.cdf(level * 3 / 10 - 2.5)
        assert (out[..., 0] == 0).mean() == pytest.approx(expected, abs=0.03)


def test_brownish_noise_has_the_tables_std_and_checkerboard_its_fraction() -> None:
    for severity in (1, 5):
        level = LEVELS["brownish_noise"][severity - 1]
        out = corrupt_images(_grey(24, 128), "brownish_noise", severity, level, 0, CPU)
        # each map has unit std within its image (its mean, the DC term, varies by image), times
        # 64 * level / 10
        assert out.astype(float).std(axis=(1, 2)).mean() == pytest.approx(6.4 * level, rel=0.03)
        level = LEVELS["checkerboard_cutout"][severity - 1]
        out = corrupt_images(_grey(100, 200), "checkerboard_cutout", severity, level, 0, CPU)
        # half the squares may be cut, each with probability level / 10
        assert (out[..., 0] == 128).mean() == pytest.approx(level / 20, abs=0.04)


def test_random_parameters_follow_the_reference_ranges() -> None:
    rng = ImageRandom(3, "x", 1, range(600), CPU)
    order = cbar_warp.draw_transverse_chromatic_abberation(rng)["order"]
    counts = np.unique([tuple(o) for o in order.tolist()], axis=0, return_counts=True)[1]
    assert len(counts) == 6 and counts.min() > 70  # all six channel orders, about 100 each
    ripple = cbar_warp.draw_ripple(rng, 32)
    assert ripple["wavelengths"].min() >= 3.2 and ripple["wavelengths"].max() < 9.6
    sparks = cbar_sparkles.draw_sparkles(rng, 7.0, 32)
    assert sparks["rays"].min() >= 50 and sparks["rays"].max() < 200
    assert sparks["lengths"].min() >= 1.0
    assert sparks["lengths"].mean().item() == pytest.approx(0.07 * 32, rel=0.02)
    signs = cbar_warp.draw_pinch_and_twirl(rng, 32)["signs"]
    assert set(signs.unique().tolist()) == {-1.0, 1.0} and abs(signs.mean().item()) < 0.05
    assert cbar_noise.draw_lines(rng, 2.5, 32)["lines"].shape == (600, 8, 3)  # int(0.25 * 32)


def test_cbar_has_its_own_mean_never_in_the_mce() -> None:
    rows = uniform_cell_rows({"clean": 5.0, "gaussian_noise": 20.0, "ripple": 40.0, "lines": 60.0})
    rec = summary_rows(cells_frame(rows))[0]
    assert rec["mce"] == 20.0 and rec["cbar_error"] == 50.0
    assert rec["cbar_corruptions"] == ["ripple", "lines"]
    only_c = summary_rows(cells_frame([r for r in rows if r["corruption"] not in CBAR_CIFAR]))[0]
    assert "cbar_error" not in only_c  # -C summaries keep their fields


def test_cbar_set_is_made_evaluated_and_reported_through_the_cli(tmp_path: Path,
                                                                trained_run: Path) -> None:
    cset = tmp_path / "cbar"
    cli_ok(["corrupt", "--dataset", "synthetic", "--out", str(cset), "--n", "20", "--benchmark",
            "c-bar", "--corruptions", "ripple,lines", "--severities", "1,5", "--device", "cpu",
            "--no-progress"])
    manifest = json.loads((cset / "manifest.json").read_text())
    assert manifest["benchmark"] == "c-bar" and manifest["preset"] == "cifar"
    assert np.load(cset / "ripple.npy").shape == (40, 32, 32, 3)
    row = evaluate_copy_and_summarise(trained_run, cset, tmp_path)
    assert row["cbar_corruptions"] == ["ripple", "lines"] and row["corruptions"] == []
    text = cli_ok(["report", str(tmp_path / "run"), "--format", "markdown"])
    assert "-C-bar mean error (%)" in text and "-C-bar corruptions, protocol none" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--benchmark", "cbar"], "unknown benchmark 'cbar'; valid: c, c-bar"),
    (["--benchmark", "c-bar", "--corruptions", "fog"], "fog not in benchmark 'c-bar'"),
    (["--benchmark", "c-bar", "--preset", "tinyimagenet"], "no -C-bar parameter table"),
    (["--benchmark", "c-bar", "--extras"], "-C-bar has none"),
])
def test_bad_benchmark_options_are_one_line_errors(tmp_path: Path, args: list[str],
                                                    message: str) -> None:
    result = CliRunner().invoke(app, ["corrupt", "--dataset", "synthetic", "--out",
                                      str(tmp_path / "x"), "--n", "10", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.output, result.output


def test_a_released_cbar_directory_loads_as_it_is(tmp_path: Path) -> None:
    images = make_split("test", 4)
    np.save(tmp_path / "ripple.npy", np.tile(images.images, (5, 1, 1, 1)))
    np.save(tmp_path / "labels.npy", np.tile(images.labels, 5))
    with pytest.warns(UserWarning, match="no manifest.json"):
        cset = open_set(tmp_path)
    assert cset.corruptions == ["ripple"] and cset.n == 4
