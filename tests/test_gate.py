"""The CI regression gate: both tiers against the committed results/smoke/, on any machine.

- exact tier: the smoke set's corrupted bytes, the committed reference checkpoints evaluated
  under every protocol, a few training steps per method; bands from the moves measured across
  simulated CPUs (results/smoke/noise.json);
- statistical tier: the smoke suite trained from scratch; bands from the spread measured across
  CPU variants and seeds.

When a change moves the numbers on purpose, regenerate the baseline with `make baseline` and
commit it; no test writes it. See results/README.md.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabn_bench.cli import app
from metabn_bench.config import load_preset
from metabn_bench.errors import UserError
from metabn_bench.gate.baseline import (
    GATE_PRESET,
    clear_work_dir,
    run_exact_tier,
    run_gate_suite,
    update_baseline,
)
from metabn_bench.gate.exact import (
    CORRUPTED_FILE,
    FINGERPRINT_FILES,
    MODELS,
    REFERENCE,
    TRAINING_FILE,
    reference_methods,
)
from metabn_bench.gate.noise import SEED_VARIANTS, VARIANTS
from metabn_bench.gate.regressions import REGRESSIONS, anchor_count
from metabn_bench.suite.records import RECORDS_DIR
from metabn_bench.suite.runner import SuiteResult

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / GATE_PRESET
TINY = ("train.epochs=1", "train.data.train_size=256", "corrupt.n_test=20", "eval.protocols=[none]",
        "corrupt.corruptions=[gaussian_noise,contrast]", "methods=[vanilla,cutout]")


def _check(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["check", *args])
    return res.exit_code, res.output


@pytest.fixture(scope="session")
def exact_rerun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exact tier, computed afresh against the committed reference checkpoints."""
    out = tmp_path_factory.mktemp("exact") / "exact"
    return run_exact_tier(out, BASELINE / REFERENCE)


@pytest.fixture(scope="session")
def smoke_rerun(tmp_path_factory: pytest.TempPathFactory) -> SuiteResult:
    """The whole smoke suite, run once per session in fresh directories."""
    root = tmp_path_factory.mktemp("gate")
    return run_gate_suite(root / "results", root / "work")


def test_exact_tier_matches_the_committed_baseline(exact_rerun: Path) -> None:
    code, out = _check("--baseline", str(BASELINE), "--current", str(exact_rerun), "--strict")
    assert code == 0, f"the exact tier moved; if intended, run `make baseline`:\n{out}"
    assert "(exact tier)" in out and "within their measured bands" in out


@pytest.mark.slow
@pytest.mark.statistical  # `make gate` (CI runs it after `make test`), not `make test`
def test_smoke_suite_is_within_the_measured_noise(smoke_rerun: SuiteResult) -> None:
    code, out = _check("--baseline", str(BASELINE), "--current", str(smoke_rerun.results_dir),
                       "--strict")
    assert code == 0, f"the smoke numbers left their bands; if intended, run `make baseline`:\n{out}"
    assert "(statistical tier)" in out
    assert not (smoke_rerun.results_dir / RECORDS_DIR).exists()


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
    # every method of the preset has a reference checkpoint and both tiers have measured noise
    assert reference_methods(BASELINE / REFERENCE) == sorted(load_preset(GATE_PRESET).methods)
    for name in ("summary.json", *FINGERPRINT_FILES, CORRUPTED_FILE):
        assert (BASELINE / REFERENCE / name).is_file(), name
    noise = json.loads((BASELINE / "noise.json").read_text())
    assert {v.name for v in VARIANTS} <= set(noise["exact"]["runs"])
    assert len(noise["statistical"]["runs"]) >= 4
    assert {"threads1", "aten-default"} <= set(noise["statistical"]["runs"])
    assert SEED_VARIANTS[0].name in noise["statistical"]["runs"]


def test_committed_reference_checkpoints_are_plain_tensors() -> None:
    import torch

    for method in reference_methods(BASELINE / REFERENCE):
        state = torch.load(BASELINE / REFERENCE / MODELS / method / "model.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_every_deliberate_regression_still_applies() -> None:
    assert len(REGRESSIONS) >= 8 and len({r.name for r in REGRESSIONS}) == len(REGRESSIONS)
    for reg in REGRESSIONS:
        assert anchor_count(reg) == 1, f"{reg.name}: anchor not found once in {reg.path}"
        assert reg.old != reg.new


def test_quickstart_writes_outside_the_checkout() -> None:
    recipe = (ROOT / "Makefile").read_text().split("\nquickstart:")[1].split("\n\n")[0]
    out = re.search(r"--out (\S+)", recipe)
    assert out and "results/" not in out.group(1)
    ignored = subprocess.run(["git", "check-ignore", "-q", out.group(1)], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{out.group(1)} must be git-ignored"


@pytest.mark.slow
def test_update_baseline_reruns_from_scratch_and_replaces_the_results(tmp_path: Path) -> None:
    target = tmp_path / "results"
    (target / "plots").mkdir(parents=True)
    (target / "plots" / "stale.png").write_bytes(b"old")
    first = update_baseline(GATE_PRESET, target, overrides=TINY, work_dir=tmp_path / "work")
    assert first.passed and not first.compared  # nothing to compare against yet
    assert not (target / "plots" / "stale.png").exists()
    for name in ("cells.csv", "summary.json", "report.md", "per_image.npz", "cam.png",
                 "plots/clean_vs_corrupted.png", f"{REFERENCE}/summary.json",
                 f"{REFERENCE}/{TRAINING_FILE}", f"{REFERENCE}/{MODELS}/cutout/model.pt"):
        assert (target / name).is_file(), name
    assert "cam.png" in (target / "report.md").read_text()
    assert not (target / RECORDS_DIR).exists()  # the baseline commits results, not run records
    # the exact tier recomputed from the new references equals itself within a fixed tolerance
    again = run_exact_tier(tmp_path / "again", target / REFERENCE, overrides=TINY)
    code, out = _check("--baseline", str(target), "--current", str(again), "--tolerance", "0")
    assert code == 0, out
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


ROW = {"method": "vanilla", "protocol": "none", "clean_error": 10.0, "mce": 20.0,
       "delta_mce_vs_vanilla": 0.0, "corruptions": ["contrast"]}


def test_check_exit_codes_and_findings(tmp_path: Path) -> None:
    base = _summary(tmp_path / "base.json", [ROW])

    def check(current: Path, *extra: str) -> tuple[int, str]:
        return _check("--baseline", str(base), "--current", str(current), "--tolerance", "0.5", *extra)

    added = _summary(tmp_path / "added.json", [ROW, {**ROW, "method": "cutout"}])
    code, out = check(added)
    assert code == 0 and "NEW      cutout [none]: not compared" in out
    code, out = check(added, "--strict")
    assert code == 1 and "NEW (not in the baseline) cutout [none]" in out
    redefined = _summary(tmp_path / "redef.json", [{**ROW, "corruptions": ["contrast", "fog"]}])
    code, out = check(redefined)
    assert code == 1 and "CHANGED  vanilla [none] corruptions: 1 (contrast) -> 2" in out
    other = _summary(tmp_path / "other.json", [ROW], source="CIFAR-10, JPEG copy")
    code, out = check(other)
    assert code == 2 and "different data" in out
    threads = tmp_path / "threads.json"
    threads.write_text(base.read_text().replace('"threads": 2', '"threads": 1'))
    code, out = check(threads)
    assert code == 0 and "CONTEXT  device.threads: baseline 2, current 1" in out
    code, out = _check("--baseline", str(base))
    assert code == 2 and "needs --baseline and --current" in out


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-1"])
def test_a_tolerance_that_is_not_a_finite_number_is_refused(tmp_path: Path, tolerance: str) -> None:
    base = _summary(tmp_path / "base.json", [ROW])
    moved = _summary(tmp_path / "moved.json", [{**ROW, "mce": 25.0}])
    code, out = _check("--baseline", str(base), "--current", str(moved), "--tolerance", tolerance)
    assert code == 2 and "tolerance must be a finite number" in out


def test_an_empty_or_all_null_baseline_is_unusable(tmp_path: Path) -> None:
    moved = _summary(tmp_path / "moved.json", [{**ROW, "mce": 25.0}])
    empty = _summary(tmp_path / "empty.json", [])
    code, out = _check("--baseline", str(empty), "--current", str(moved), "--tolerance", "1")
    assert code == 2 and "no rows" in out
    nulls = _summary(tmp_path / "nulls.json", [{**ROW, "clean_error": None, "mce": None,
                                               "delta_mce_vs_vanilla": None}])
    code, out = _check("--baseline", str(nulls), "--current", str(moved), "--tolerance", "1")
    assert code == 2 and "null" in out


def _noise(directory: Path, sd: float) -> None:
    stat = {"runs": ["baseline", "threads1"], "k": 4.0,
            "pooled_sd": {"clean_error": sd, "mce": sd, "delta_mce_vs_vanilla": sd},
            "sd": {"vanilla|none": {"mce": sd / 2}}, "values": {}}
    (directory / "noise.json").write_text(json.dumps({"schema": "metabn-bench gate noise v1",
                                                      "statistical": stat}))


def test_bands_come_from_the_measured_noise_and_are_printed(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    _summary(tmp_path / "base" / "summary.json", [ROW])
    _noise(tmp_path / "base", sd=1.0)  # band: 4 x sqrt(2) x 1.0 = 5.657 points
    inside = _summary(tmp_path / "inside.json", [{**ROW, "mce": 25.5}])
    code, out = _check("--baseline", str(tmp_path / "base"), "--current", str(inside))
    assert code == 0 and "within their measured bands" in out
    outside = _summary(tmp_path / "outside.json", [{**ROW, "mce": 26.0}])
    code, out = _check("--baseline", str(tmp_path / "base"), "--current", str(outside))
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("MOVED"))
    assert "vanilla [none] mce: 20.0 -> 26.0" in line and "[14.343, 25.657]" in line
    assert "pooled 1.00" in line and "threads1" in line and "noise.json" in line
    (tmp_path / "base" / "noise.json").unlink()
    code, out = _check("--baseline", str(tmp_path / "base"), "--current", str(inside))
    assert code == 2 and "gate noise" in out
