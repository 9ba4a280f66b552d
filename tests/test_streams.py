"""Test streams and reset policies (evaluation/streams.py): each stream's defining property,
seeded reproducibility, and the stream runner against today's per-cell evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metabn_bench.data import per_image
from metabn_bench.data.store import open_set
from metabn_bench.errors import UserError
from metabn_bench.evaluation.evaluate import Evaluator, cells_of, clean_images, evaluate
from metabn_bench.evaluation.streams import parse_reset, plan, run_stream, stream_label
from metabn_bench.runs import EVAL_FILE, load_config

CORR = ["gaussian_noise", "shot_noise", "impulse_noise"]
CELLS = [("clean", 0)] + [(c, s) for c in CORR for s in range(1, 6)]
N = 20
LABELS = np.repeat(np.arange(4), 5)[np.random.default_rng(0).permutation(N)]


def _cells_of_batches(steps: list) -> list[tuple[str, int]]:
    return [CELLS[int(b.cells[0])] for b in steps]


def test_per_cell_resets_before_every_cell_with_todays_batches() -> None:
    steps = plan("per-cell", parse_reset("cell"), CELLS, N, LABELS, 8)
    assert len(steps) == len(CELLS) * 3  # 8 + 8 + 4 per cell
    for i, b in enumerate(steps):
        assert b.reset == (i % 3 == 0) and len(set(b.cells.tolist())) == 1
        assert b.images.tolist() == list(range(8 * (i % 3), min(N, 8 * (i % 3) + 8)))


def test_continual_never_resets_between_corruptions() -> None:
    steps = plan("continual", parse_reset("never"), CELLS, N, LABELS, 10)
    resets = [i for i, b in enumerate(steps) if b.reset]
    assert resets == [0, 2]  # before clean, and once before the corrupted stream
    order = list(dict.fromkeys(_cells_of_batches(steps)[2:]))
    assert order == [(c, s) for s in range(1, 6) for c in CORR]  # severity by severity


def test_gradual_goes_up_and_down_within_each_corruption() -> None:
    steps = plan("gradual", parse_reset("corruption"), CELLS, N, LABELS, N)
    seen = _cells_of_batches(steps)[1:]
    assert seen[:9] == [("gaussian_noise", s) for s in (1, 2, 3, 4, 5, 4, 3, 2, 1)]
    resets = [_cells_of_batches(steps)[i] for i, b in enumerate(steps) if b.reset]
    assert resets == [("clean", 0), ("gaussian_noise", 1), ("shot_noise", 1), ("impulse_noise", 1)]


def test_mixed_shuffles_every_image_of_every_cell_once() -> None:
    steps = plan("mixed", parse_reset("never"), CELLS, N, LABELS, 16, seed=3)
    corrupted = steps[2:]
    pairs = {(int(c), int(i)) for b in corrupted for c, i in zip(b.cells, b.images)}
    assert len(pairs) == sum(b.cells.size for b in corrupted) == (len(CELLS) - 1) * N
    assert np.mean([len(set(b.cells.tolist())) for b in corrupted]) > 5  # cells mixed per batch
    again = plan("mixed", parse_reset("never"), CELLS, N, LABELS, 16, seed=3)
    assert all(np.array_equal(a.images, b.images) and np.array_equal(a.cells, b.cells)
               for a, b in zip(steps, again))
    with pytest.raises(UserError, match="mixes cells"):
        plan("mixed", parse_reset("cell"), CELLS, N, LABELS, 16)


def test_dirichlet_small_delta_gives_batches_dominated_by_one_class() -> None:
    labels = np.repeat(np.arange(10), 100)[np.random.default_rng(1).permutation(1000)]
    cells = [("clean", 0), ("gaussian_noise", 1)]

    def dominance(delta: float) -> float:
        steps = plan("dirichlet", parse_reset("cell"), cells, 1000, labels, 50, seed=0, delta=delta)
        corrupted = [b for b in steps if cells[int(b.cells[0])][0] != "clean"]
        assert sorted(np.concatenate([b.images for b in corrupted]).tolist()) == list(range(1000))
        return float(np.mean([np.bincount(labels[b.images]).max() / b.images.size
                              for b in corrupted]))

    # i.i.d. batches of 50 from 10 balanced classes: the top class holds about a fifth.
    assert dominance(0.01) > 0.6 and dominance(1000.0) < 0.35
    with pytest.raises(UserError, match="dirichlet-delta"):
        plan("dirichlet", parse_reset("cell"), cells, 1000, labels, 50, delta=0.0)


def test_every_k_resets_every_k_batches_and_bad_policies_are_one_line() -> None:
    steps = plan("continual", parse_reset("every:4"), CELLS, N, LABELS, 10)
    assert [i for i, b in enumerate(steps[2:]) if b.reset] == list(range(0, 30, 4))
    for bad in ("sometimes", "every:0", "every:x"):
        with pytest.raises(UserError, match="--reset"):
            parse_reset(bad)
    assert stream_label("bn", "per-cell", parse_reset("cell"), 0, 0.1) == "bn"
    assert stream_label("bn", "continual", parse_reset("never"), 2, 0.1) == "bn@continual,reset=never,seed=2"


def test_runner_on_the_per_cell_plan_equals_todays_evaluation(trained_run: Path,
                                                              corrupted_set: Path) -> None:
    cset = open_set(corrupted_set)
    clean = clean_images(load_config(trained_run), cset)
    cells = cells_of(cset, extras=False)
    steps = plan("per-cell", parse_reset("cell"), cells, cset.n, cset.labels, 10)
    ev = Evaluator(trained_run, torch.device("cpu"), "bn")
    got = run_stream(ev, lambda c: clean if c[0] == "clean" else cset.cell(*c), cells,
                     cset.labels, steps)
    for cell in cells[:6]:
        images = clean if cell[0] == "clean" else cset.cell(*cell)
        today = Evaluator(trained_run, torch.device("cpu"), "bn").cell(images, cset.labels, 10)
        assert np.array_equal(got[cell].correct, today.correct)
        assert got[cell].calibration["ece"] == pytest.approx(today.calibration["ece"], abs=1e-3)


def test_evaluate_continual_rows_are_recorded_and_reproducible(trained_run: Path,
                                                               corrupted_set: Path,
                                                               tmp_path: Path) -> None:
    out, stored = [], 0
    for name in ("a", "b"):
        run = tmp_path / name
        shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(EVAL_FILE, per_image.RUN_FILE))
        rows = evaluate(run, corrupted_set, ("bn",), batch_size=10, device="cpu", progress=False,
                        stream="continual", reset="never", stream_seed=5)
        stored = len(per_image.load_run(run, rows))
        out.append(sorted(({k: v for k, v in r.items() if k not in ("seconds", "run_id")} for r in rows),
                          key=lambda r: (r["corruption"], r["severity"])))
    assert out[0] == out[1] and len(out[0]) == 1 + 5 * len(open_set(corrupted_set).corruptions)
    row = out[0][0]
    assert row["protocol"] == "bn@continual,reset=never,seed=5"
    assert (row["stream"], row["reset"], row["stream_seed"]) == ("continual", "never", 5)
    assert stored == len(out[0])  # every cell's per-image vector was stored
