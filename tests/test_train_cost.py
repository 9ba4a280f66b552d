"""The compute column: training time recorded per epoch, read back per run, and the median
ratio against the baseline (CPU seconds on a CPU, wall seconds otherwise, n/a when missing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metabn_bench import fsio
from metabn_bench.reporting.costs import (
    attach_costs,
    costs_from_record,
    costs_record,
    read_training_cost,
)
from metabn_bench.reporting.report import build_report, format_report
from metabn_bench.training.loop import train
from tests.helpers import tiny_train_config
from tests.report_fixtures import make_rows


def _run(root: Path, name: str, method: str, seed: int, epochs: list[tuple[float, float | None]],
         device: str = "cpu") -> Path:
    """A run directory holding only what the cost column reads (wall, CPU seconds per epoch)."""
    run = root / name
    run.mkdir(parents=True)
    fsio.write_json(run / "config.json", {"method": method, "seed": seed, "epochs": len(epochs)})
    fsio.write_json(run / "env.json", {"device": {"type": device, "name": "testcpu", "threads": 1}})
    rows = [{"epoch": i, "seconds": w} | ({} if c is None else {"cpu_seconds": c})
            for i, (w, c) in enumerate(epochs)]
    fsio.write_jsonl(run / "metrics.jsonl", rows)
    return run


def test_training_records_cpu_seconds_next_to_wall_seconds(tmp_path: Path) -> None:
    info = train(tiny_train_config(data={"train_size": 64}), tmp_path / "run", progress=False)
    (row,) = fsio.read_jsonl(info.run_dir / "metrics.jsonl")
    assert row["seconds"] > 0 and row["cpu_seconds"] > 0
    cost = read_training_cost(info.run_dir)
    assert cost is not None and cost.device == "cpu" and cost.epochs == 1
    assert cost.cpu_seconds == pytest.approx(row["cpu_seconds"])


def test_median_ratio_over_seeds_on_the_cpu_clock(tmp_path: Path) -> None:
    costs = {p.name: read_training_cost(p) for p in [
        _run(tmp_path, "v0", "vanilla", 0, [(10, 8), (10, 8)]),   # 16 CPU s
        _run(tmp_path, "v1", "vanilla", 1, [(30, 10), (30, 10)]),  # 20 CPU s (a loaded machine)
        _run(tmp_path, "v2", "vanilla", 2, [(12, 9), (12, 9)]),   # 18 CPU s
        _run(tmp_path, "c0", "cutout", 0, [(40, 36)]),            # 36
        _run(tmp_path, "c1", "cutout", 1, [(40, 900)]),           # an outlier the median ignores
        _run(tmp_path, "c2", "cutout", 2, [(40, 40)]),            # 40
    ]}
    rows = [{"method": "vanilla", "run_ids": ["v0", "v1", "v2"]},
            {"method": "cutout", "run_ids": ["c0", "c1", "c2"]}]
    used = attach_costs(rows, costs, "vanilla")  # type: ignore[arg-type]
    assert rows[0]["train_cost_vs_vanilla"] == pytest.approx(1.0)
    assert rows[1]["train_cost_vs_vanilla"] == pytest.approx(40 / 18)
    assert rows[1]["train_cost_clock"] == "CPU"
    assert costs_from_record(costs_record(used)) == used  # summary.json round trip


def test_wall_clock_without_cpu_records_and_na_without_records(tmp_path: Path) -> None:
    costs = {p.name: read_training_cost(p) for p in [
        _run(tmp_path, "v0", "vanilla", 0, [(10, None)]),  # recorded before cpu_seconds existed
        _run(tmp_path, "m0", "mixup", 0, [(25, 20)]),
        _run(tmp_path, "g0", "augmix", 0, [(5, 1)], device="cuda"),
    ]}
    rows = [{"method": "vanilla", "run_ids": ["v0"]}, {"method": "mixup", "run_ids": ["m0"]},
            {"method": "augmix", "run_ids": ["g0"]}, {"method": "cutout", "run_ids": ["x0"]}]
    attach_costs(rows, costs, "vanilla")  # type: ignore[arg-type]
    assert rows[1]["train_cost_vs_vanilla"] == pytest.approx(2.5)
    assert rows[1]["train_cost_clock"] == "wall"
    assert rows[2]["train_cost_clock"] == "wall"  # a GPU run is timed by the wall clock
    assert rows[3]["train_cost_vs_vanilla"] is None and rows[3]["train_cost_clock"] is None


def test_the_report_shows_the_column_and_records_the_runs(tmp_path: Path) -> None:
    rows, vectors = make_rows(n=50, seeds=(0, 1))
    costs = {p.name: read_training_cost(p) for p in [
        _run(tmp_path, "vanilla-s0", "vanilla", 0, [(10, 10)]),
        _run(tmp_path, "vanilla-s1", "vanilla", 1, [(10, 12)]),
        _run(tmp_path, "cutout-s0", "cutout", 0, [(10, 13)]),
        _run(tmp_path, "cutout-s1", "cutout", 1, [(10, 14)]),
    ]}
    report = build_report(rows, {}, vectors=vectors, resamples=50, training=costs)  # type: ignore[arg-type]
    by_method = {r["method"]: r for r in report.rows}
    assert by_method["cutout"]["train_cost_vs_vanilla"] == pytest.approx(13.5 / 11)
    assert {r["run_id"] for r in report.summary["training"]} == set(costs)
    json.dumps(report.summary)  # stays JSON
    text = format_report(report, "markdown")
    assert "train cost (x vanilla)" in text and "1.23 (CPU)" in text and "testcpu" in text
