"""The Meta-BN ablation: training controls under a suite's recipe (identity, record, skip) and
the table over run records (grouping by variant, deltas, seed-level intervals)."""

from __future__ import annotations

from pathlib import Path

from metabn_bench.analysis.controls import control_config, parse_hparams
from metabn_bench.cli import app
from metabn_bench.config import identity, load_preset
from metabn_bench.suite.jobs import plan_jobs
from metabn_bench.suite.records import RECORDS_DIR
from tests.suite_helpers import OneThread, write_preset

DATA = ["train.data.dataset=npy:cifar10-copy"]  # as the suite is run on real data


def _without(cfg: dict, *keys: str) -> dict:
    return {k: v for k, v in cfg.items() if k not in keys}


def test_a_control_is_the_suites_run_with_other_hparams() -> None:
    suite = load_preset("cifar10-cpu", DATA)
    planned = {(j.method, j.seed): j.config for j in plan_jobs(suite, Path("/w"), 10)}
    for seed in (0, 2):
        same = control_config(suite, "metabn", seed, {})
        assert identity(same) == identity(planned[("metabn", seed)])  # the suite's own run
        hp = parse_hparams(["bound=0", "training_mode=joint", "meta_test_stats=own"])
        ctl = identity(control_config(suite, "metabn", seed, hp))
        suite_run = identity(planned[("metabn", seed)])
        assert _without(ctl, "hparams") == _without(suite_run, "hparams")
        assert ctl["hparams"] == {**suite_run["hparams"], "bound": 0.0, "training_mode": "joint",
                                  "meta_test_stats": "own"}
    assert identity(control_config(suite, "vanilla", 1, {})) == identity(planned[("vanilla", 1)])


def test_control_trains_evaluates_records_and_is_skipped_once_recorded(
        tmp_path: Path, small_set: Path, runner: object) -> None:
    preset = write_preset(
        tmp_path, methods=["metabn"], seeds=[0],
        train={"arch": "wrn10_1", "epochs": 1, "device": "cpu",
               "data": {"dataset": "synthetic", "train_size": 64},
               "optim": {"batch_size": 32, "lr": 0.05}},
        corrupt={"preset": "cifar", "n_test": 12, "corruptions": ["contrast"],
                 "severities": [1, 5]},
        eval={"protocols": ["none"], "batch_size": 6})
    args = ["analysis", "control", "bound0", "0", "--preset", str(preset), "--work",
            str(tmp_path / "w"), "--corrupted", str(small_set), "--results",
            str(tmp_path / "r"), "--hparam", "bound=0", "--device", "cpu"]
    with OneThread():
        first = runner.invoke(app, args)  # type: ignore[attr-defined]
        assert first.exit_code == 0, first.output
        record = tmp_path / "r" / RECORDS_DIR / "bound0-s0"
        assert "recorded: " in first.output and (record / "done").is_file()
        assert (record / "per_image.npz").is_file() and not (record / "model.pt").exists()
        again = runner.invoke(app, args)  # type: ignore[attr-defined]
    assert again.exit_code == 0 and "skipped" in again.output
    bad = runner.invoke(app, [*args[:2], "Bound-0", *args[3:]])  # type: ignore[attr-defined]
    assert bad.exit_code == 2 and "variant name 'Bound-0' is not valid" in bad.output
