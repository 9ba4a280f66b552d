"""The CI regression gate: the smoke suite, re-run from scratch, must match results/smoke/.

When a change moves the smoke numbers on purpose (a new method or corruption, a fixed bug),
regenerate the baseline with `make baseline` and commit it; this test never writes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabn_bench.baseline import (
    GATE_PRESET,
    GATE_TOLERANCE,
    clear_work_dir,
    run_gate_suite,
    update_baseline,
)
from metabn_bench.check import compare, load_summary
from metabn_bench.cli import app
from metabn_bench.errors import UserError
from metabn_bench.suite import SuiteResult

BASELINE = Path(__file__).resolve().parents[1] / "results" / GATE_PRESET
TINY = ("train.epochs=1", "train.data.train_size=256", "corrupt.n_test=20", "eval.protocols=[none]",
        "corrupt.corruptions=[gaussian_noise,contrast]")


@pytest.fixture(scope="session")
def smoke_rerun(tmp_path_factory: pytest.TempPathFactory) -> SuiteResult:
    """The whole smoke suite, run once per session in fresh directories (pinned like the gate)."""
    root = tmp_path_factory.mktemp("gate")
    return run_gate_suite(root / "results", root / "work")


@pytest.mark.slow
def test_smoke_suite_matches_the_committed_baseline(smoke_rerun: SuiteResult) -> None:
    res = CliRunner().invoke(app, ["check", "--baseline", str(BASELINE), "--current",
                                   str(smoke_rerun.results_dir), "--tolerance", str(GATE_TOLERANCE),
                                   "--strict"])
    assert res.exit_code == 0, ("the smoke numbers moved; if intended, run `make baseline` and "
                                f"commit results/smoke/:\n{res.output}")
    compared = compare(load_summary(BASELINE), load_summary(smoke_rerun.results_dir), GATE_TOLERANCE)
    assert compared.compared >= 3 and "pass" in res.output


def test_the_committed_baseline_is_complete() -> None:
    summary = json.loads((BASELINE / "summary.json").read_text())
    assert summary["provenance"]["device"]["type"] == "cpu"
    assert summary["statistics"]["resamples"] > 0
    assert all("mce_normalized" in r for r in summary["rows"])
    report = (BASELINE / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert "cam.png" in links and any(link.startswith("plots/") for link in links)
    for link in links:
        assert (BASELINE / link).is_file(), link
    assert (BASELINE / "per_image.npz").is_file()


@pytest.mark.slow
def test_update_baseline_reruns_from_scratch_and_replaces_the_results(tmp_path: Path) -> None:
    target = tmp_path / "results"
    (target / "plots").mkdir(parents=True)
    (target / "plots" / "stale.png").write_bytes(b"old")
    first = update_baseline(GATE_PRESET, target, overrides=TINY, work_dir=tmp_path / "work")
    assert first.passed and not first.compared  # nothing to compare against yet
    assert not (target / "plots" / "stale.png").exists()
    for name in ("cells.csv", "summary.json", "report.md", "per_image.npz", "cam.png",
                 "plots/clean_vs_corrupted.png"):
        assert (target / name).is_file(), name
    assert "cam.png" in (target / "report.md").read_text()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not a baseline work directory"):
        update_baseline(GATE_PRESET, target, overrides=TINY, work_dir=tmp_path / "mine")


def test_a_suite_work_directory_is_cleared_and_a_foreign_one_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for name in ("corrupted", "train", "logs"):
        (work / name).mkdir(parents=True)
    (work / "plan.json").write_text("{}")  # what a finished suite leaves behind
    clear_work_dir(work)
    assert not work.exists()
    (work / "train").mkdir(parents=True)
    (work / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="thesis.tex: not a baseline work directory"):
        clear_work_dir(work)
    assert (work / "thesis.tex").is_file()


def _summary(path: Path, rows: list[dict], source: str = "synthetic shapes v1") -> Path:
    path.write_text(json.dumps({"schema": "metabn-bench summary v1",
                                "provenance": {"data_source": source, "device": {"threads": 2}},
                                "rows": rows}))
    return path


def test_check_exit_codes_and_findings(tmp_path: Path) -> None:
    row = {"method": "vanilla", "protocol": "none", "clean_error": 10.0, "mce": 20.0,
           "delta_mce_vs_vanilla": 0.0, "corruptions": ["contrast"]}
    base = _summary(tmp_path / "base.json", [row])
    runner = CliRunner()

    def check(current: Path, *extra: str) -> tuple[int, str]:
        res = runner.invoke(app, ["check", "--baseline", str(base), "--current", str(current), *extra])
        return res.exit_code, res.output

    added = _summary(tmp_path / "added.json", [row, {**row, "method": "cutout"}])
    code, out = check(added)
    assert code == 0 and "NEW      cutout [none]: not compared" in out
    code, out = check(added, "--strict")
    assert code == 1 and "NEW (not in the baseline) cutout [none]" in out
    redefined = _summary(tmp_path / "redef.json", [{**row, "corruptions": ["contrast", "fog"]}])
    code, out = check(redefined)
    assert code == 1 and "CHANGED  vanilla [none] corruptions: 1 (contrast) -> 2" in out
    other = _summary(tmp_path / "other.json", [row], source="CIFAR-10, JPEG copy")
    code, out = check(other)
    assert code == 2 and "different data" in out
    threads = tmp_path / "threads.json"
    threads.write_text(base.read_text().replace('"threads": 2', '"threads": 1'))
    code, out = check(threads)
    assert code == 0 and "CONTEXT  device.threads: baseline 2, current 1" in out
    res = runner.invoke(app, ["check", "--baseline", str(base)])
    assert res.exit_code == 2 and "needs --baseline and --current" in res.output
