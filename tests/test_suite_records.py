"""Run records: a suite skips runs whose small outputs are committed under its results
directory, status says where each run's results come from and what is left, and the report
is rebuilt from the records alone."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from metabn_bench.cli import app
from metabn_bench.config import load_preset
from metabn_bench.suite.jobs import read_plan
from metabn_bench.suite.records import RECORDS_DIR
from metabn_bench.suite.runner import run_suite
from metabn_bench.suite.status import is_complete, status_summary, status_table, suite_status
from tests.suite_helpers import OneThread, write_preset


def test_committed_records_are_skipped_and_status_shows_what_is_left(tmp_path: Path) -> None:
    first = load_preset(str(write_preset(tmp_path, seeds=[0], eval={"protocols": ["none"],
                                                                     "batch_size": 10})))
    with OneThread():
        run_suite(first, tmp_path / "a" / "results", tmp_path / "a" / "work", progress=False)
    records = tmp_path / "a" / "results" / RECORDS_DIR
    (record,) = records.iterdir()
    assert sorted(p.name for p in record.iterdir()) == [
        "config.json", "done", "env.json", "eval.jsonl", "metrics.jsonl", "per_image.npz"]

    # Another machine: the committed results directory, a fresh work directory, one seed more.
    results = tmp_path / "b" / "results"
    shutil.copytree(tmp_path / "a" / "results", results)
    second = load_preset(str(write_preset(tmp_path, seeds=[0, 1], eval={"protocols": ["none"],
                                                                         "batch_size": 10})))
    state = suite_status(second, tmp_path / "b" / "work", results)
    table = status_table(state)
    assert list(table["state"]) == ["done", "missing"]
    assert list(table["from"]) == ["committed record", "—"]
    assert table["note"][0].startswith("trained ") and " at commit " in table["note"][0]
    summary = "\n".join(status_summary(state))
    assert "1 done from committed records" in summary
    assert "left: 1 run(s) (vanilla s1); about" in summary and "h of training" in summary

    with OneThread():
        run_suite(second, results, tmp_path / "b" / "work", progress=False)
    trained = sorted((tmp_path / "b" / "work" / "train").iterdir())
    assert [p.name.split("-")[1] for p in trained] == ["s1"]  # seed 0 was not trained again
    rows = json.loads((results / "summary.json").read_text())["rows"]
    assert rows[0]["seeds"] == [0, 1] and rows[0]["train_cost_vs_vanilla"] == 1.0
    assert len(list((results / RECORDS_DIR).iterdir())) == 2
    assert "left: nothing" in "\n".join(status_summary(
        suite_status(second, tmp_path / "b" / "work", results)))
    # A plan without records (the gate's) counts only what its own work directory finished.
    plan = read_plan(tmp_path / "b" / "work")
    assert [is_complete(plan, j) for j in plan.jobs] == [True, True]
    unrecorded = dataclasses.replace(plan, records=False)
    assert [is_complete(unrecorded, j) for j in plan.jobs] == [False, True]

    # The report from the committed records alone gives the same numbers.
    out = CliRunner().invoke(app, ["report", str(results / RECORDS_DIR), "--format", "json"])
    assert out.exit_code == 0, out.output
    again = json.loads(out.output)["rows"]
    assert [(r["method"], r["mce"], r["clean_error"]) for r in again] == [
        (r["method"], r["mce"], r["clean_error"]) for r in rows]
    assert {r["seed"] for r in json.loads(out.output)["training"]} == {0, 1}


def test_a_record_of_another_config_is_not_taken_for_the_job(tmp_path: Path) -> None:
    cfg = load_preset(str(write_preset(tmp_path, seeds=[0], eval={"protocols": ["none"],
                                                                   "batch_size": 10})))
    results = tmp_path / "results"
    fake = results / RECORDS_DIR
    state = suite_status(cfg, tmp_path / "work", results)
    name = state.jobs[0].job.run_dir.name
    (fake / name).mkdir(parents=True)
    (fake / name / "config.json").write_text(json.dumps({"method": "vanilla", "epochs": 99}))
    (fake / name / "done").write_text("{}")
    (fake / name / "eval.jsonl").write_text("")
    assert status_table(suite_status(cfg, tmp_path / "work", results))["state"].tolist() == [
        "missing"]


def test_a_suite_without_records_writes_none(tmp_path: Path) -> None:
    cfg = load_preset(str(write_preset(tmp_path, seeds=[0], eval={"protocols": ["none"],
                                                                   "batch_size": 10})))
    with OneThread():
        result = run_suite(cfg, tmp_path / "results", tmp_path / "work", progress=False,
                           records=False)
    assert (result.results_dir / "summary.json").is_file()
    assert not (result.results_dir / RECORDS_DIR).exists()
    assert read_plan(tmp_path / "work").records is False
