"""The evaluation journal (evaluation/journal.py): each cell saved once, folded into eval.jsonl
and per_image.npz with the same content the per-cell rewrite gave, and safe to resume."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metabn_bench import fsio
from metabn_bench.data import per_image
from metabn_bench.evaluation import evaluate as ev
from metabn_bench.evaluation.journal import JOURNAL_DIR, ROWS_FILE, Journal, merge
from metabn_bench.runs import EVAL_FILE


def _fresh_run(trained_run: Path, where: Path) -> Path:
    """The shared trained run without any evaluation results."""
    shutil.copytree(trained_run, where,
                    ignore=shutil.ignore_patterns(EVAL_FILE, per_image.RUN_FILE, JOURNAL_DIR))
    return where


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _row(corruption: str, n: int = 10, errors: int = 3) -> dict[str, Any]:
    return {"run_id": "r", "set_id": "s", "protocol": "none", "test_batch_size": 4, "corruption": corruption,
            "severity": 1, "n": n, "errors": errors, "per_image": True}


def test_consolidated_files_equal_the_per_cell_rewrite(
        tmp_path: Path, trained_run: Path, small_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same cells, stored the old way (eval.jsonl merged and rewritten, per_image.npz put
    after every cell), give the same rows in the same order and the same per-image arrays."""
    run = _fresh_run(trained_run, tmp_path / "run")
    cells: list[tuple[dict[str, Any], np.ndarray, np.ndarray]] = []
    original = Journal.add

    def add(self: Journal, row: dict[str, Any], correct: np.ndarray | None = None,
            confidence: np.ndarray | None = None) -> None:
        assert correct is not None and confidence is not None
        cells.append((dict(row), correct.copy(), confidence.copy()))
        original(self, row, correct, confidence)

    monkeypatch.setattr(Journal, "add", add)
    ev.evaluate(run, small_set, ("none", "bn"), device="cpu", progress=False)
    assert len(cells) == 2 * 5 and not (run / JOURNAL_DIR).exists()

    ref = tmp_path / "ref"
    ref.mkdir()
    vectors = per_image.RunVectors(ref)
    for row, correct, confidence in cells:  # the per-cell rewrite this replaced
        vectors.put(per_image.cell_key(row), correct, confidence)
        fsio.write_jsonl(ref / EVAL_FILE, merge(fsio.read_jsonl(ref / EVAL_FILE), [row]))
    assert (run / EVAL_FILE).read_text() == (ref / EVAL_FILE).read_text()
    got, want = _npz(run / per_image.RUN_FILE), _npz(ref / per_image.RUN_FILE)
    assert got.keys() == want.keys()
    for name in want:
        assert np.array_equal(got[name], want[name]), name


def test_torn_last_line_and_lost_part_are_dropped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    old = _row("clean")
    fsio.write_jsonl(tmp_path / EVAL_FILE, [old])
    journal = Journal(tmp_path)
    vectors = {c: (rng.random(10) < 0.7, rng.random(10).astype(np.float16))
               for c in ("fog", "snow", "frost")}
    for corruption, (correct, confidence) in vectors.items():
        journal.add(_row(corruption, errors=int((~correct).sum())), correct, confidence)
    (tmp_path / JOURNAL_DIR / "0000001.npz").unlink()  # snow's part
    with open(tmp_path / JOURNAL_DIR / ROWS_FILE, "a") as fh:
        fh.write('{"part": "0000003.npz", "row": {"set_id": "s", "prot')  # a killed append

    rows = Journal(tmp_path).consolidate()
    assert [r["corruption"] for r in rows] == ["clean", "fog", "frost"]
    assert fsio.read_jsonl(tmp_path / EVAL_FILE) == rows
    assert not (tmp_path / JOURNAL_DIR).exists()
    kept = [r for r in rows if r["corruption"] != "clean"]
    stored = per_image.load_run(tmp_path, kept)
    confs = per_image.load_run_confidences(tmp_path, kept)
    assert len(stored) == len(confs) == 2
    for r in kept:
        correct, confidence = vectors[r["corruption"]]
        assert np.array_equal(stored[per_image.row_key(r)], correct)
        assert np.array_equal(confs[per_image.row_key(r)], confidence.astype(np.float32))
    assert Journal(tmp_path).consolidate() == rows  # nothing left to fold in


def test_a_journal_line_that_is_not_the_last_must_parse(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.add(_row("fog"))
    with open(journal.rows_path, "a") as fh:
        fh.write("not json\n")
    with pytest.raises(ev.UserError, match="line 2 is not a journal line"):
        journal.consolidate()


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in the evaluation."""


def test_killed_evaluation_resumes_and_evaluates_each_cell_once(
        tmp_path: Path, trained_run: Path, small_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _fresh_run(trained_run, tmp_path / "ref")
    want = ev.evaluate(ref, small_set, ("none",), device="cpu", progress=False)
    run = _fresh_run(trained_run, tmp_path / "run")
    original_cell, original_consolidate = ev.Evaluator.cell, Journal.consolidate
    state = {"cells": 0, "killed": False}

    def cell(self: ev.Evaluator, *args: Any) -> ev.CellResult:
        state["cells"] += 1
        if state["cells"] == 4:
            state["killed"] = True
            raise _Killed
        return original_cell(self, *args)

    def consolidate(self: Journal, extra: Any = ()) -> list[dict[str, Any]]:
        if state["killed"]:  # a killed process folds nothing in
            raise OSError("killed")
        return original_consolidate(self, extra)

    monkeypatch.setattr(ev.Evaluator, "cell", cell)
    monkeypatch.setattr(Journal, "consolidate", consolidate)
    with pytest.raises(_Killed):
        ev.evaluate(run, small_set, ("none",), device="cpu", progress=False)
    assert not (run / EVAL_FILE).exists()  # three cells in the journal only
    assert len((run / JOURNAL_DIR / ROWS_FILE).read_text().splitlines()) == 3
    with open(run / JOURNAL_DIR / ROWS_FILE, "a") as fh:
        fh.write('{"part": "00')

    monkeypatch.undo()
    added: list[tuple[Any, ...]] = []
    original_add = Journal.add
    monkeypatch.setattr(Journal, "add", lambda self, row, *a: (
        added.append(per_image.cell_key(row)), original_add(self, row, *a))[1])
    rows = ev.evaluate(run, small_set, ("none",), device="cpu", progress=False)
    assert len(added) == len(set(added)) == 5 - 3  # the journaled cells are not evaluated again
    key = per_image.cell_key
    assert [key(r) for r in rows] == [key(r) for r in want]
    assert [r["errors"] for r in rows] == [r["errors"] for r in want]
    assert len(per_image.load_run(run, rows)) == 5
    assert not (run / JOURNAL_DIR).exists()
