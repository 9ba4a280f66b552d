"""The Meta-BN ablation: training controls under a suite's recipe (identity, record, skip) and
the table over run records (grouping by variant, deltas, seed-level intervals)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from metabn_bench.analysis.ablation import write_ablation
from metabn_bench.analysis.ablation_runs import load_runs
from metabn_bench.analysis.ablation_table import ONE_SEED
from metabn_bench.analysis.controls import control_config, parse_hparams
from metabn_bench.cli import app
from metabn_bench.config import identity, load_preset, to_dict
from metabn_bench.data import per_image
from metabn_bench.errors import UserError
from metabn_bench.suite.jobs import plan_jobs
from metabn_bench.suite.records import RECORDS_DIR
from tests.helpers import tiny_train_config
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
        assert "meta_test_stats" not in identity(same)["hparams"]  # earlier runs keep their hash
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
    refreshed = runner.invoke(app, ["analysis", "record", str(tmp_path / "w" / "bound0-s0"),  # type: ignore[attr-defined]
                                    "--results", str(tmp_path / "r2")])
    assert refreshed.exit_code == 0 and (tmp_path / "r2" / RECORDS_DIR / "bound0-s0" / "done").is_file()
    unfinished = runner.invoke(app, ["analysis", "record", str(tmp_path), "--results",  # type: ignore[attr-defined]
                                     str(tmp_path / "r2")])
    assert unfinished.exit_code == 2 and "Traceback" not in unfinished.output
    bad = runner.invoke(app, [*args[:2], "Bound-0", *args[3:]])  # type: ignore[attr-defined]
    assert bad.exit_code == 2 and "variant name 'Bound-0' is not valid" in bad.output


CELLS = [("clean", 0)] + [(c, s) for c in ("gaussian_noise", "contrast") for s in (1, 2)]
N = 40


def _record(root: Path, name: str, method: str, seed: int, hparams: dict, rate: float,
            specs: dict[str, float] | None = None, arch: str = "wrn10_1") -> dict:
    """A hand-made run record: config, done, eval rows and per-image vectors of the cells under
    each protocol spec (spec -> error rate); returns the wrong-vectors by (spec, cell)."""
    run = root / name
    run.mkdir(parents=True)
    cfg = tiny_train_config(method=method, seed=seed, hparams=hparams, arch=arch)
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    (run / "done").write_text("")
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    vectors, rows, wrong = per_image.RunVectors(run), [], {}
    for spec, p in (specs or {"none": rate}).items():
        control = spec.partition("control=")[2] or "none"
        for corruption, severity in CELLS:
            bad = rng.random(N) < p
            wrong[(spec, corruption, severity)] = bad
            key = ("S", spec, 20, corruption, severity)
            vectors.put(key, ~bad)
            rows.append({"run_id": name, "method": method, "arch": arch, "seed": seed,
                         "data_source": "synthetic", "set_id": "S", "corruption": corruption,
                         "severity": severity, "n": N, "errors": int(bad.sum()),
                         "error": 100.0 * bad.mean(), "protocol": spec, "test_batch_size": 20,
                         "per_image": True,
                         **({"metabn": {"control": control}} if method == "metabn" else {})})
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return wrong


def _mce_wrong(wrong: dict, spec: str = "none") -> np.ndarray:
    """(images,) fraction of the corrupted cells each image is wrong in."""
    return np.mean([wrong[(spec, c, s)] for c, s in CELLS if c != "clean"], axis=0)


def test_ablation_table_groups_seeds_and_computes_the_deltas(tmp_path: Path) -> None:
    suite, controls = tmp_path / "suite", tmp_path / "controls"
    w = {}
    for seed in (0, 1):
        w["vanilla", seed] = _record(suite, f"vanilla-s{seed}-01234567{seed}9", "vanilla", seed, {}, 0.5)
        w["augmix", seed] = _record(suite, f"augmix-s{seed}-0a234567{seed}9", "augmix", seed, {}, 0.3)
        w["metabn", seed] = _record(suite, f"metabn-s{seed}-0b234567{seed}9", "metabn", seed, {},
                                    0.35, {"none": 0.35, "none:control=zero-z": 0.45})
        w["bound0", seed] = _record(controls, f"bound0-s{seed}", "metabn", seed, {"bound": 0.0}, 0.4)
    w["clean_proxy", 0] = _record(controls, "clean_proxy-s0", "metabn", 0, {"proxy": "clean"}, 0.4)
    out = write_ablation([suite, controls], tmp_path / "table", "t", {"recipe": "tiny"}, [])
    table = json.loads((out / "table.json").read_text())
    assert table["provenance"]["commit"] and table["provenance"]["corrupted_set"] == "S"
    rows = {r["row"]: r for r in table["rows"]}
    assert set(rows) == {"vanilla", "augmix", "metabn", "metabn, z=0 at test", "bound0",
                         "clean_proxy"}
    assert rows["bound0"]["seeds"] == [0, 1] and rows["clean_proxy"]["seeds"] == [0]
    # mCE: the mean over seeds of each run's mean cell error.
    mce = [100 * _mce_wrong(w["bound0", s]).mean() for s in (0, 1)]
    assert rows["bound0"]["mce"]["mean"] == pytest.approx(np.mean(mce))
    for row, key, spec in (("bound0", "bound0", "none"),
                           ("metabn, z=0 at test", "metabn", "none:control=zero-z")):
        for ref in ("metabn", "vanilla"):
            per_seed = [100 * (_mce_wrong(w[key, s], spec) - _mce_wrong(w[ref, s])).mean()
                        for s in (0, 1)]
            d = rows[row]["delta_mce"][ref]
            assert d["seeds_paired"] and d["estimate"] == pytest.approx(np.mean(per_seed))
            assert [d["per_seed"][str(s)] for s in (0, 1)] == pytest.approx(per_seed)
            assert d["ci"][0] <= d["estimate"] <= d["ci"][1] and d["ci"][0] < d["ci"][1]
    one = rows["clean_proxy"]["delta_mce"]["metabn"]
    assert one["ci"] is None and one["note"] == ONE_SEED
    assert one["estimate"] == pytest.approx(
        100 * (_mce_wrong(w["clean_proxy", 0]) - _mce_wrong(w["metabn", 0])).mean())
    assert "metabn" not in rows["metabn"]["delta_mce"]  # no delta of a row against itself
    assert ONE_SEED in (out / "table.md").read_text()


def test_ablation_refuses_mixed_recipes_and_variants_that_differ(tmp_path: Path) -> None:
    _record(tmp_path / "a", "bound0-s0", "metabn", 0, {"bound": 0.0}, 0.4)
    _record(tmp_path / "a", "bound0-s1", "metabn", 1, {"bound": 0.1}, 0.4)
    with pytest.raises(UserError, match="runs of variant 'bound0' differ in more than the seed"):
        load_runs([tmp_path / "a"])
    _record(tmp_path / "b", "metabn-s0-0123456789", "metabn", 0, {}, 0.4)
    _record(tmp_path / "b", "vanilla-s0-0123456789", "vanilla", 0, {}, 0.4, arch="wrn16_2")
    with pytest.raises(UserError, match="different recipes \\(arch\\)"):
        load_runs([tmp_path / "b"])
    _record(tmp_path / "c", "metabn_s0", "metabn", 0, {}, 0.4)
    with pytest.raises(UserError, match="'metabn_s0' is not named <variant>-s<seed>"):
        load_runs([tmp_path / "c"])
