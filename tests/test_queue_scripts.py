"""The background experiment queue (scripts/queue/): one suite run per line, resumable anywhere.

suite1.sh narrows a suite preset to one (method, seed); its run must be the suite's own (same
run directory name, so the same config identity), or its record would not count in the suite's
table. plan.txt is the program a new machine starts from; a line naming a method, seed or
control that does not exist would fail hours into a session.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metabn_bench.config import load_preset, preset_dict
from metabn_bench.suite.jobs import plan_jobs
from metabn_bench.suite.records import RECORDS_DIR
from tests.suite_helpers import ROOT, cli_env, write_preset

QUEUE = ROOT / "scripts" / "queue"
CONTROLS = ROOT / "results" / "metabn-ablation" / "run.sh"


def _suite1(q: Path, preset: Path, method: str, seed: int) -> str:
    env = {**cli_env(), "Q": str(q), "PRESET": str(preset), "DATA": "synthetic",
           "LABEL": "synthetic shapes", "PY": sys.executable}
    done = subprocess.run(["bash", str(QUEUE / "suite1.sh"), method, str(seed)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_suite1_trains_the_suites_own_run_and_skips_it_the_second_time(tmp_path: Path) -> None:
    preset = write_preset(tmp_path, methods=["vanilla", "cutout"], seeds=[0],
                          method_seeds={"vanilla": [0, 1]}, method_hparams={"cutout": {"size": 8}})
    first = _suite1(tmp_path / "q", preset, "vanilla", 1)
    assert "trained: vanilla seed 1" in first
    derived = yaml.safe_load((tmp_path / "q" / "presets" / "tiny-vanilla-s1.yaml").read_text())
    assert derived["methods"] == ["vanilla"] and derived["seeds"] == [1]
    assert "method_seeds" not in derived and derived["name"] == "tiny"
    # the record's name is the full suite's run for (vanilla, 1): same config identity
    suite_runs = {Path(j.run_dir).name for j in plan_jobs(load_preset(str(preset), [
        "train.data.dataset=synthetic", "train.data.label=synthetic shapes"]), tmp_path, 10)}
    records = list((tmp_path / "q" / "out" / "vanilla-s1" / RECORDS_DIR).iterdir())
    assert [r.name for r in records] == [n for n in suite_runs if n.startswith("vanilla-s1-")]
    assert (records[0] / "done").is_file() and not list(records[0].glob("*.pt"))
    second = _suite1(tmp_path / "q", preset, "vanilla", 1)
    assert "trained:" not in second  # finished: nothing trains again


def _controls1(q: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(), "Q": str(q), "PY": sys.executable}
    return subprocess.run(["bash", str(QUEUE / "controls1.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)


def test_controls1_records_the_three_evaluation_only_controls_then_skips(tmp_path: Path) -> None:
    q = tmp_path / "q"
    preset = write_preset(tmp_path, methods=["metabn"], seeds=[0])
    _suite1(q, preset, "metabn", 0)
    first = _controls1(q, "metabn", "0")
    assert first.returncode == 0, first.stdout + first.stderr
    records = list((q / "out" / "metabn-ablation" / RECORDS_DIR).iterdir())
    assert [r.name[:len("metabn-s0-")] for r in records] == ["metabn-s0-"]
    protocols = {json.loads(row)["protocol"]
                 for row in (records[0] / "eval.jsonl").read_text().splitlines()}
    assert {f"none:control={c}" for c in ("zero-z", "shuffle-z", "static")} <= protocols
    assert not list(records[0].glob("*.pt"))  # a record never holds weights
    again = _controls1(q, "metabn", "0")
    assert again.returncode == 0 and "controls already recorded" in again.stdout


def test_controls1_refuses_other_methods_and_missing_models(tmp_path: Path) -> None:
    wrong = _controls1(tmp_path, "augmix", "0")
    assert wrong.returncode == 2 and "valid: metabn, augmix_metabn" in wrong.stderr
    absent = _controls1(tmp_path, "metabn", "1")
    assert absent.returncode == 3 and "not in" in absent.stderr


def test_suite1_refuses_a_method_the_preset_does_not_list(tmp_path: Path) -> None:
    env = {**cli_env(), "Q": str(tmp_path), "PRESET": str(write_preset(tmp_path)),
           "PY": sys.executable}
    done = subprocess.run(["bash", str(QUEUE / "suite1.sh"), "mixup", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "method 'mixup' is not in preset" in done.stderr


def test_every_line_of_the_plan_names_a_real_run() -> None:
    preset = preset_dict("cifar10-cpu")
    seeds = {m: preset.get("method_seeds", {}).get(m, preset["seeds"]) for m in preset["methods"]}
    variants = set(re.findall(r"^  (\w+)\) hp=", CONTROLS.read_text(), re.M))
    planned = set()
    for line in (QUEUE / "plan.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        # a lane reads the cost to decide whether the line ends before the session's deadline
        assert re.search(r"#\s*~\d+\s*min\s*$", line), line
        for command in line.split("&&"):
            words = shlex.split(command, comments=True)
            script = next(w for w in words if w.endswith(".sh"))
            assert (ROOT / script).is_file(), line
            args = words[words.index(script) + 1:]
            if script.endswith("suite1.sh"):
                method, seed = args[0], int(args[1])
                assert seed in seeds[method], line
                planned.add((method, seed))
            elif script.endswith("controls1.sh"):  # after the same run's training
                assert (args[0], int(args[1])) in planned, line
            elif script.endswith("metabn-ablation/run.sh"):
                assert args[0] in variants and int(args[1]) in (0, 1, 2), line
            else:
                assert script.endswith("tta-cifar10-cpu/run.sh"), line
    # the plan covers the whole table: every (method, seed) of the preset
    assert planned == {(m, s) for m, ss in seeds.items() for s in ss}


def test_the_folders_the_queue_commits_are_not_git_ignored() -> None:
    """A record written under an ignored path is silently left out of the lane's commit and lost
    with the machine (it happened to the test-time records under results/*/runs/)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tta = (ROOT / "results" / "tta-cifar10-cpu" / "run.sh").read_text()
    assert '$RESULTS/records/$name-$kind' in tta
    folders = ["results/tta-cifar10-cpu/records", "results/cifar10-cpu/run_records",
               "results/metabn-ablation/run_records"]
    probes = [f"{folder}/some-run-s0-0123456789/eval.jsonl" for folder in folders]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *probes], cwd=ROOT,
                             capture_output=True, text=True, check=False)
    assert ignored.stdout == "", ignored.stdout


def _lane(tmp_path: Path, lines: list[str], deadline: str | None) -> Path:
    """Run lane.sh once over `lines` in a throwaway checkout; returns the queue directory."""
    checkout, q = tmp_path / "checkout", tmp_path / "q"
    checkout.mkdir(parents=True)
    (checkout / "README").write_text("a checkout\n")
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-C", str(checkout)]
    for args in (["init", "-q"], ["add", "README"], ["commit", "-qm", "one"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    q.mkdir()
    (q / "queue.txt").write_text("".join(line + "\n" for line in lines))
    if deadline is not None:
        (q / "deadline").write_text(deadline + "\n")
    env = {**cli_env(), "Q": str(q), "CHECKOUT": str(checkout)}
    done = subprocess.run(["bash", str(QUEUE / "lane.sh"), "1"], env=env, capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return q


def test_a_lane_leaves_lines_that_would_outlast_the_deadline_in_the_queue(tmp_path: Path) -> None:
    lines = ["echo short > $Q/short.txt  # ~1 min", "echo long > $Q/long.txt  # ~600 min",
             "echo unknown > $Q/unknown.txt"]
    q = _lane(tmp_path, lines, "+30 minutes")
    assert (q / "short.txt").is_file() and (q / "unknown.txt").is_file()
    assert not (q / "long.txt").exists()
    assert (q / "queue.txt").read_text().splitlines() == [lines[1]]  # kept for a later session


def test_a_lane_past_its_deadline_starts_nothing_and_without_one_runs_everything(
        tmp_path: Path) -> None:
    lines = ["echo short > $Q/short.txt  # ~1 min", "echo long > $Q/long.txt  # ~600 min"]
    late = _lane(tmp_path / "late", lines, "-1 minute")
    assert not (late / "short.txt").exists() and len((late / "queue.txt").read_text().splitlines()) == 2
    free = _lane(tmp_path / "free", lines, None)
    assert (free / "short.txt").is_file() and (free / "long.txt").is_file()
