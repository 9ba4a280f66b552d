"""Two-stage (seeds, then images) bootstrap: reduction to the image bootstrap, widening under
seed spread, per-seed deltas and their place in summary.json."""

from __future__ import annotations

import numpy as np
import pytest

from metabn_bench.data.per_image import row_key
from metabn_bench.reporting.hierarchical import (
    SeedColumns,
    add_seed_intervals,
    seed_weights,
    two_stage_deltas,
)
from metabn_bench.reporting.metrics import cells_frame
from metabn_bench.reporting.report import build_report
from metabn_bench.reporting.stats import bootstrap_means, paired_comparisons
from tests.report_fixtures import make_rows


def test_one_seed_reduces_to_the_image_bootstrap() -> None:
    rows, vectors = make_rows(n=300, seeds=(0,))
    comps = paired_comparisons(cells_frame(rows), vectors, resamples=400)
    add_seed_intervals(comps, resamples=400)
    (comp,) = comps
    # One seed: the seed stage always draws it, and the image draw is the image bootstrap's.
    for image_only, with_seeds in ((comp.mce, comp.mce_seeds), (comp.clean, comp.clean_seeds)):
        assert with_seeds is not None and image_only is not None
        assert with_seeds.estimate == pytest.approx(image_only.estimate, abs=1e-9)
        assert with_seeds.low == pytest.approx(image_only.low, abs=1e-9)
        assert with_seeds.high == pytest.approx(image_only.high, abs=1e-9)


def test_seed_spread_widens_the_interval_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    n, k = 2000, 4
    base = rng.random((n, k)) < 0.3
    # The method is 10 points worse on seeds 0 and 2 and 10 points better on seeds 1 and 3.
    method = rng.random((n, k)) < 0.3 + np.array([0.1, -0.1, 0.1, -0.1])
    cols = SeedColumns(100.0 * method, 100.0 * base, True, [0, 1, 2, 3])
    spread = np.percentile(two_stage_deltas(cols, 1000, 0), [2.5, 97.5])
    image_only = np.percentile(bootstrap_means((cols.method - cols.base).mean(1, keepdims=True),
                                               1000, 0), [2.5, 97.5])
    assert spread[1] - spread[0] > 2 * (image_only[1] - image_only[0])
    assert np.array_equal(two_stage_deltas(cols, 200, 0), two_stage_deltas(cols, 200, 0))
    unpaired = SeedColumns(100.0 * method, 100.0 * base[:, :2], False, [])
    assert unpaired.per_seed_deltas() == {} and two_stage_deltas(unpaired, 50, 0).shape == (50,)


def test_seed_weights_are_draws_of_k_out_of_k() -> None:
    w = seed_weights(3, 500, 0, "paired")
    assert w.shape == (500, 3) and np.allclose(w.sum(1), 1.0)
    assert set(np.round(w.ravel() * 3).astype(int)) <= {0, 1, 2, 3}
    assert len({tuple(r) for r in w}) > 3  # not one fixed draw


def test_per_seed_deltas_recompute_from_the_per_image_vectors() -> None:
    rows, vectors = make_rows(n=200, seeds=(0, 1, 2))
    report = build_report(rows, {"source": "test"}, vectors=vectors, resamples=100)
    (row,) = [r for r in report.rows if r["method"] == "cutout"]
    per_seed = row["delta_mce_vs_vanilla_per_seed"]
    assert set(per_seed) == {"0", "1", "2"}
    for seed in (0, 1, 2):
        # by hand: mean over common cells and images of wrong(cutout) - wrong(vanilla)
        def wrong(method: str, seed: int = seed) -> float:
            keys = [row_key(r) for r in rows if r["method"] == method and r["seed"] == seed
                    and r["corruption"] != "clean"]
            return float(np.mean([~vectors[k] for k in keys]))

        assert per_seed[str(seed)] == pytest.approx(100.0 * (wrong("cutout") - wrong("vanilla")))
    assert np.mean(list(per_seed.values())) == pytest.approx(row["delta_mce_vs_vanilla_paired"])
    low, high = row["delta_mce_vs_vanilla_ci95_seeds"]
    assert low <= row["delta_mce_vs_vanilla_paired"] <= high
    assert "with_seeds" in report.summary["statistics"]
