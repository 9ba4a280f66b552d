"""Report views of calibration: the mean ECE/NLL/Brier table and the reliability diagrams, read
from rows and stored per-image confidences only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metabn_bench.data import calibration, per_image
from metabn_bench.reporting.calibration import calibration_view, pooled_reliability
from metabn_bench.reporting.plots import write_plots
from metabn_bench.reporting.report import build_report, collect, format_report, write_results
from tests.report_fixtures import make_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _with_calibration() -> tuple[list[dict[str, Any]], per_image.PerImage, per_image.PerImage]:
    """make_rows' rows with made-up calibration fields and confidences (not measurements)."""
    rows, vectors = make_rows(protocols=("none", "bn"))
    confidences = {}
    for i, row in enumerate(rows):
        key = per_image.row_key(row)
        rng = np.random.default_rng(i)
        conf = rng.uniform(0.3, 1.0, row["n"]).astype(np.float16).astype(np.float32)
        confidences[key] = conf
        row |= {"ece": 100 * calibration.expected_calibration_error(conf, vectors[key]),
                "nll": 0.5 + 0.1 * row["severity"], "brier": 0.2 + 0.05 * row["severity"],
                "calibration_bins": 15}
    return rows, vectors, confidences


def test_calibration_table_is_the_mean_over_corruption_cells_then_seeds() -> None:
    rows, vectors, _ = _with_calibration()
    view = calibration_view(build_report(rows, {}, vectors=vectors, resamples=20).frame)
    line = view[(view["method"] == "vanilla") & (view["protocol"] == "none")].iloc[0]
    per_seed = [np.mean([r["ece"] for r in rows if r["run_id"] == f"vanilla-s{s}"
                         and r["protocol"] == "none" and r["corruption"] != "clean"]) for s in (0, 1)]
    assert line["n seeds"] == 2 and line["cells per seed"] == 15
    assert line["mean ECE (%)"] == f"{np.mean(per_seed):.2f} ± {np.std(per_seed, ddof=1):.2f}"
    assert line["mean NLL"] == "0.800 ± 0.000"  # 0.5 + 0.1 x mean severity 3
    assert len(view) == 4  # 2 methods x 2 protocols


def test_report_shows_calibration_and_reliability_diagrams(tmp_path: Path) -> None:
    rows, vectors, confidences = _with_calibration()
    report = build_report(rows, {}, vectors=vectors, resamples=20, confidences=confidences)
    assert "Calibration under shift" in format_report(report, "markdown")
    made = {p.name: p for _, p in write_plots(report, tmp_path / "plots")}
    assert {"reliability_none.png", "reliability_bn.png"} <= set(made)
    assert made["reliability_none.png"].read_bytes().startswith(PNG_MAGIC)
    # Pooled over seeds and cells: the clean bins hold every clean image of both seeds.
    count, _, _, ece = pooled_reliability(report, "vanilla", "none", 0)
    assert count.sum() == 2 * 400
    keys = [per_image.row_key(r) for r in rows if r["method"] == "vanilla"
            and r["protocol"] == "none" and r["corruption"] == "clean"]
    assert ece == pytest.approx(calibration.expected_calibration_error(
        np.concatenate([confidences[k] for k in keys]), np.concatenate([vectors[k] for k in keys])))
    # The results directory keeps the confidences: a report from it draws the same diagrams.
    out = write_results(report, tmp_path / "results", "t", plots=False)
    again = collect([out])
    assert set(again.confidences) == set(confidences)
    assert all(np.allclose(again.confidences[k], v) for k, v in confidences.items())


def test_rows_without_calibration_give_no_table_and_no_diagram(tmp_path: Path) -> None:
    rows, vectors = make_rows()
    report = build_report(rows, {}, vectors=vectors, resamples=20)
    assert calibration_view(report.frame).empty
    assert "Calibration under shift" not in format_report(report, "markdown")
    assert not any(p.name.startswith("reliability") for _, p in write_plots(report, tmp_path))
