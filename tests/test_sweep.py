"""The test batch-size sweep (evaluate --batch-sizes): one forward per image at batch 1, rows
that differ only in batch size, the same rows from the same command, the batch-size view."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from metabn_bench.data import per_image
from metabn_bench.errors import UserError
from metabn_bench.evaluation import evaluate as ev
from metabn_bench.evaluation.sweep import check_batch_sizes, sweep_label
from metabn_bench.reporting.batch_sizes import batch_size_table
from metabn_bench.reporting.metrics import cells_frame
from metabn_bench.runs import EVAL_FILE

# What a batch size may change in a row: its label, the size itself, and what was measured.
MEASURED = {"protocol", "test_batch_size", "errors", "error", "seconds", "ece", "nll", "brier",
            "calibration_bins"}


CELLS = 1 + 2 * 2  # the small set: clean + two corruptions x two severities


def _fresh(trained_run: Path, where: Path) -> Path:
    shutil.copytree(trained_run, where, ignore=shutil.ignore_patterns(EVAL_FILE, per_image.RUN_FILE))
    return where


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the batch size of every forward pass of every Evaluator."""
    sizes: list[int] = []
    original = ev.Evaluator._forward

    def forward(self: ev.Evaluator, x: torch.Tensor) -> torch.Tensor:
        sizes.append(int(x.shape[0]))
        return original(self, x)

    monkeypatch.setattr(ev.Evaluator, "_forward", forward)
    return sizes


@pytest.mark.parametrize(("spec", "stream", "reset"), [("none", "per-cell", "cell"),
                                                       ("tent", "continual", "never")])
def test_batch_one_is_one_forward_per_image(trained_run: Path, small_set: Path,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            spec: str, stream: str, reset: str) -> None:
    run = _fresh(trained_run, tmp_path / "run")
    sizes = _counting(monkeypatch)
    rows = ev.evaluate(run, small_set, (spec,), device="cpu", progress=False, stream=stream,
                       reset=reset, batch_sizes=(1,))
    n_images = sum(r["n"] for r in rows)
    assert len(rows) == CELLS and all(r["test_batch_size"] == 1 for r in rows)
    assert sizes == [1] * n_images  # exactly one forward pass per image, each of one image


def test_rows_differ_only_in_batch_size_and_what_it_measures(trained_run: Path,
                                                             small_set: Path,
                                                             tmp_path: Path) -> None:
    run = _fresh(trained_run, tmp_path / "run")
    rows = ev.evaluate(run, small_set, ("bn",), device="cpu", progress=False,
                       batch_sizes=(2, 12))
    by_size: dict[int, dict[tuple[str, int], dict[str, Any]]] = {}
    for r in rows:
        by_size.setdefault(r["test_batch_size"], {})[(r["corruption"], r["severity"])] = r
    assert sorted(by_size) == [2, 12] and len(by_size[2]) == len(by_size[12]) == CELLS
    for cell, small in by_size[2].items():
        large = by_size[12][cell]
        assert {k for k in small.keys() | large.keys() if small.get(k) != large.get(k)} <= MEASURED
        assert (small["protocol"], large["protocol"]) == ("bn@batch=2", "bn@batch=12")
        assert small["sweep_protocol"] == large["sweep_protocol"] == "bn"
    # BN adaptation estimates its statistics from the batch: the sizes measure differently.
    mean = {b: sum(r["error"] for r in cells.values()) for b, cells in by_size.items()}
    assert mean[2] != mean[12]


def test_same_command_gives_the_same_rows(trained_run: Path, small_set: Path,
                                          tmp_path: Path) -> None:
    out, rows = [], []
    for name in ("a", "b"):
        run = _fresh(trained_run, tmp_path / name)
        rows = ev.evaluate(run, small_set, ("bn",), device="cpu", progress=False,
                           stream="dirichlet", reset="cell", stream_seed=3, batch_sizes=(4, 16))
        out.append(sorted(({k: v for k, v in r.items() if k not in ("seconds", "run_id")}
                           for r in rows),
                          key=lambda r: (r["protocol"], r["corruption"], r["severity"])))
    assert out[0] == out[1] and len(out[0]) == 2 * CELLS
    assert {r["protocol"] for r in out[0]} == {
        "bn@dirichlet,reset=cell,seed=3,delta=0.1,batch=4",
        "bn@dirichlet,reset=cell,seed=3,delta=0.1,batch=16"}
    table = batch_size_table(cells_frame(rows))
    assert list(table.columns) == ["batch 4", "batch 16"]
    assert table.index.tolist() == [("vanilla", "bn@dirichlet,reset=cell,seed=3,delta=0.1")]


def test_bad_sizes_are_one_line_errors() -> None:
    assert check_batch_sizes(0, ()) == [0] and check_batch_sizes(0, (1, 200)) == [1, 200]
    for sizes, what in (((0, 2), "integers from 1"), ((2, 2), "repeats"), ((10**9,), "integers from 1")):
        with pytest.raises(UserError, match=what):
            check_batch_sizes(0, sizes)
    with pytest.raises(UserError, match="both given"):
        check_batch_sizes(8, (1, 2))
    assert sweep_label("tent", 16) == "tent@batch=16"
    assert sweep_label("tent@continual,reset=never,seed=0", 1) == "tent@continual,reset=never,seed=0,batch=1"


def test_report_warns_when_one_label_holds_two_batch_sizes() -> None:
    """Two `--batch-size` runs under one protocol label would be averaged: the report says so."""
    from metabn_bench.reporting.views import warnings

    rows = [{"run_id": "r", "set_id": "s", "protocol": "bn", "test_batch_size": b,
             "corruption": "clean", "severity": 0, "error": 1.0} for b in (8, 64)]
    assert any("more than one test batch size" in w for w in warnings([], cells_frame(rows)))
    swept = [r | {"protocol": sweep_label("bn", r["test_batch_size"])} for r in rows]
    assert not any("batch size" in w for w in warnings([], cells_frame(swept)))


def test_cli_sweep_prints_the_batch_size_table_and_refuses_bad_sizes(
        trained_run: Path, small_set: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from metabn_bench.cli import app

    run = _fresh(trained_run, tmp_path / "run")
    runner = CliRunner()
    ok = runner.invoke(app, ["evaluate", str(run), "--corrupted", str(small_set), "--adapt", "none",
                             "--batch-sizes", "2,12", "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert "batch 2" in ok.output and "batch 12" in ok.output
    bad = runner.invoke(app, ["evaluate", str(run), "--corrupted", str(small_set),
                              "--batch-sizes", "0,4"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert "--batch-sizes has 0" in bad.output
