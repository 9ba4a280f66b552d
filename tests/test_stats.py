"""Paired bootstrap over test images: determinism, coverage, verdicts and seed pairing."""

from __future__ import annotations

import numpy as np
import pytest

from metabn_bench.reporting.metrics import cells_frame, summary_rows
from metabn_bench.reporting.stats import bootstrap_means, paired_comparisons
from tests.report_fixtures import make_rows


def test_bootstrap_is_seeded_and_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0.5, 2.0, size=(2000, 1))
    a = bootstrap_means(d, resamples=1000)
    assert np.array_equal(a, bootstrap_means(d, resamples=1000))  # same inputs, same resamples
    assert not np.array_equal(a, bootstrap_means(d, resamples=1000, seed=1))
    # Independent check: the bootstrap standard error of a mean is sd / sqrt(n).
    assert a.std() == pytest.approx(d.std() / np.sqrt(d.shape[0]), rel=0.1)
    assert a.mean() == pytest.approx(d.mean(), abs=3 * d.std() / np.sqrt(d.shape[0]) / 10)


def test_columns_share_their_resamples() -> None:
    d = np.random.default_rng(0).normal(size=(300, 1))
    both = bootstrap_means(np.hstack([d, 2 * d]), resamples=200)
    np.testing.assert_allclose(both[:, 1], 2 * both[:, 0])  # same indices for every column


def test_paired_deltas_verdicts_and_agreement_with_the_summary() -> None:
    rows, vectors = make_rows()
    df = cells_frame(rows)
    (comp,) = paired_comparisons(df, vectors, "vanilla", resamples=500)
    assert comp.method == "cutout" and comp.reason is None
    assert comp.seeds == [0, 1] and comp.seeds_paired and comp.n_images == 400
    assert comp.corruptions["gaussian_noise"].verdict == "win"
    blur = comp.corruptions["defocus_blur"]
    assert (blur.estimate, blur.low, blur.high) == (0.0, 0.0, 0.0) and blur.verdict == "tie"
    assert comp.corruptions["contrast"].verdict == "loss"
    assert comp.win_tie_loss() == {"win": ["gaussian_noise"], "tie": ["defocus_blur"],
                                   "loss": ["contrast"]}
    summary = {r["method"]: r for r in summary_rows(df)}
    # With the same seeds and cells, the paired estimate is exactly the summary's delta.
    assert comp.mce.estimate == pytest.approx(summary["cutout"]["delta_mce_vs_vanilla"])
    assert comp.clean.estimate == pytest.approx(summary["cutout"]["delta_clean_error_vs_vanilla"])
    assert comp.mce.low < comp.mce.estimate < comp.mce.high


def test_seeds_are_paired_by_value_and_missing_vectors_are_explained() -> None:
    rows_a, vec_a = make_rows(seeds=(0, 1), methods=("vanilla",))
    rows_b, vec_b = make_rows(seeds=(1, 2), methods=("cutout",))
    (comp,) = paired_comparisons(cells_frame(rows_a + rows_b), {**vec_a, **vec_b}, resamples=100)
    assert comp.seeds == [1] and comp.seeds_paired
    rows_c, vec_c = make_rows(seeds=(5,), methods=("cutout",))
    (comp,) = paired_comparisons(cells_frame(rows_a + rows_c), {**vec_a, **vec_c}, resamples=100)
    assert not comp.seeds_paired and comp.seeds == [0, 1, 5] and comp.mce is not None
    (comp,) = paired_comparisons(cells_frame(rows_a + rows_b), {}, resamples=100)
    assert comp.mce is None and "no per-image results" in comp.reason
