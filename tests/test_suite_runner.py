"""The suite runner: killed at any moment and re-run gives the same tables; status; locks;
failures recorded while the other runs go on; the gpus launcher with CPU workers."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from metabn_bench import fsio
from metabn_bench.cli import app
from metabn_bench.config import load_preset
from metabn_bench.runlock import HOLDER_FILE, RunLock, clear_failure, holder, record_failure
from metabn_bench.suite.runner import run_suite
from metabn_bench.suite.status import suite_status
from metabn_bench.training import loop as train_mod
from tests.suite_helpers import (
    ROOT,
    TINY_SUITE,
    OneThread,
    cli_env,
    final_tables,
    write_preset,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny suite, run once without interruption in this process (one thread)."""
    root = tmp_path_factory.mktemp("reference")
    cfg = load_preset(str(write_preset(root)))
    with OneThread():
        run_suite(cfg, root / "results", root / "work", progress=False)
    return root


def _progress(work: Path) -> int:
    """How far a suite got: corruption files made + epochs trained + cells evaluated."""
    n = 0
    manifest = work / "corrupted" / "manifest.json"
    if manifest.exists():
        files = json.loads(manifest.read_text()).get("files", {})
        n += sum(e.get("kind") == "corruption" for e in files.values())
    for run in (work / "train").glob("*"):
        n += len(fsio.read_jsonl(run / "metrics.jsonl")) + len(fsio.read_jsonl(run / "eval.jsonl"))
    return n


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kill_when(args: list[str], work: Path, threshold: int, sig: int) -> tuple[bool, int, str]:
    """Start the CLI, send `sig` once the suite's progress reaches `threshold`."""
    # A shell that starts the tests in the background (`cmd &`) makes them ignore SIGINT, and
    # Python keeps an ignored SIGINT ignored: give the suite the default disposition back.
    proc = subprocess.Popen([sys.executable, "-m", "metabn_bench", *args], env=cli_env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 300
    while proc.poll() is None and _progress(work) < threshold and time.monotonic() < deadline:
        time.sleep(0.02)
    sent = proc.poll() is None
    if sent:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return sent, proc.returncode, err


def test_a_killed_suite_resumes_to_the_same_tables(reference: Path, tmp_path: Path) -> None:
    preset = write_preset(tmp_path)
    work, results = tmp_path / "work", tmp_path / "results"
    args = ["run", "--preset", str(preset), "--work", str(work), "--out", str(results),
            "--no-progress"]
    # Progress counts 1 corruption + 2 runs x (2 epochs + 12 cells) = 29 steps; the 1st run
    # spans steps 2-15, the 2nd 16-29. SIGINT lands somewhere in the 1st run, SIGKILL in the
    # 2nd (not in its last cells, so that it lands before the suite ends). The moments are
    # random but the same in every test run; this seed stops the 1st run in its evaluation and
    # the 2nd in its training, after its first checkpoint.
    assert _progress(reference / "work") == 29
    rng = random.Random(10)
    first, second = rng.randint(2, 14), rng.randint(16, 23)

    sent, code, err = _kill_when(args, work, first, signal.SIGINT)
    assert sent and code == 130, err
    assert "interrupted; run the same command again to resume" in err
    sent, code, err = _kill_when(args, work, second, signal.SIGKILL)
    assert sent and code == -signal.SIGKILL, err
    assert not (results / "summary.json").exists()
    states = [s.state for s in suite_status(load_preset(str(preset)), work).jobs]
    assert "running" not in states  # the kernel dropped the killed process's lock
    assert states != ["done"] * 2

    with OneThread():  # the last run to completion, in this process (no start-up cost)
        run_suite(load_preset(str(preset)), results, work, progress=False)
    rows, cells = final_tables(results)
    ref_rows, ref_cells = final_tables(reference / "results")
    assert rows == ref_rows
    pd.testing.assert_frame_equal(cells, ref_cells, check_exact=True)


def test_status_shows_done_running_failed_interrupted_and_missing(
        reference: Path, tmp_path: Path, runner: CliRunner) -> None:
    work = tmp_path / "work"
    shutil.copytree(reference / "work", work)  # plan.json paths are relative: it moves
    preset = str(reference / "tiny.yaml")
    runs = sorted((work / "train").iterdir())  # seed 0, seed 1

    def status(*extra: str) -> str:
        result = runner.invoke(app, ["status", "--preset", preset, "--work", str(work),
                                     "--out", str(tmp_path / "none"), *extra])
        assert result.exit_code == 0, result.output
        return result.output

    def line(out: str, state: str) -> str:
        return next(x for x in out.splitlines() if f"| {state}" in x and "vanilla" in x)

    lock = RunLock(runs[0], stage="evaluate")
    assert lock.acquire()
    try:
        record_failure(runs[1], "train", RuntimeError("disk on fire"))
        out = status("--set", "seeds=[0, 1, 2]")
    finally:
        lock.release()
    assert "corrupted set: complete (1/1 corruptions" in out
    assert "runs: 3 (1 running, 1 failed, 1 missing)" in out
    assert "results: not written yet" in out
    assert "evaluate by pid" in line(out, "running") and "6/6" in line(out, "running")
    assert "RuntimeError: disk on fire" in line(out, "failed")
    assert "0/2" in line(out, "missing")

    clear_failure(runs[1])
    (runs[1] / "eval.jsonl").unlink()
    out = status()
    assert "runs: 2 (1 done, 1 interrupted)" in out
    assert "2/2" in line(out, "interrupted") and "0/6" in line(out, "interrupted")
    done = runner.invoke(app, ["status", "--preset", preset, "--work", str(reference / "work"),
                               "--out", str(reference / "results")])
    assert "runs: 2 (2 done)" in done.output and "summary.json" in done.output


def test_a_lock_held_by_a_killed_process_is_free(tmp_path: Path) -> None:
    code = ("import sys, time; from metabn_bench.runlock import RunLock; "
            f"lock = RunLock({str(tmp_path)!r}, stage='train'); lock.acquire(); print('held', flush=True); "
            "time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=cli_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert holder(tmp_path)["pid"] == proc.pid
        assert not RunLock(tmp_path).acquire()  # a second process is refused
    finally:
        proc.kill()
        proc.wait()
    assert (tmp_path / HOLDER_FILE).exists()  # left behind by SIGKILL ...
    assert holder(tmp_path) is None  # ... but not believed
    lock = RunLock(tmp_path)
    assert lock.acquire()
    lock.release()


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path: Path, runner: CliRunner,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    preset = write_preset(tmp_path, seeds=[0, 1],
                          train={**TINY_SUITE["train"], "epochs": 1},
                          corrupt={"preset": "cifar", "n_test": 10, "corruptions": ["contrast"]},
                          eval={"protocols": ["none"], "batch_size": 10})
    args = ["run", "--preset", str(preset), "--work", str(tmp_path / "w"), "--out",
            str(tmp_path / "r"), "--no-progress"]
    original = train_mod.train

    def broken(cfg, *a, **k):
        if cfg.seed == 0:
            raise RuntimeError("disk on fire")
        return original(cfg, *a, **k)

    monkeypatch.setattr(train_mod, "train", broken)
    with OneThread():
        result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "1 run(s) failed" in result.output and "RuntimeError: disk on fire" in result.output
    jobs = {s.job.seed: s for s in suite_status(load_preset(str(preset)), tmp_path / "w").jobs}
    assert jobs[0].state == "failed" and "broken" in jobs[0].failure["traceback"]
    assert jobs[1].state == "done"
    assert not (tmp_path / "r" / "summary.json").exists()
    monkeypatch.setattr(train_mod, "train", original)
    with OneThread():
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (jobs[0].job.run_dir / "failed.json").exists()


def test_gpus_launcher_with_two_cpu_workers_gives_the_local_tables(
        reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metabn_bench.suite.launch import LaunchOptions

    work, results = tmp_path / "work", tmp_path / "results"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' threads, as the reference's
    with OneThread():
        run_suite(load_preset(str(write_preset(tmp_path))), results, work, progress=False,
                  launcher="gpus", launch=LaunchOptions(workers=2, poll_s=0.2))
    logs = [(work / "logs" / f"worker-{k}.log").read_text() for k in (0, 1)]
    assert all("started" in log and "no job left" in log for log in logs)
    trained = [line for log in logs for line in log.splitlines() if ": trained: vanilla" in line]
    assert len(trained) == 2  # every run trained once, by one worker or the other
    rows, cells = final_tables(results)
    ref_rows, ref_cells = final_tables(reference / "results")
    assert rows == ref_rows
    pd.testing.assert_frame_equal(cells, ref_cells, check_exact=True)


def test_launcher_options_are_checked(runner: CliRunner, tmp_path: Path) -> None:
    from metabn_bench.errors import UserError
    from metabn_bench.suite.launch import LaunchOptions, parse_launch_options
    from metabn_bench.suite.launch.gpus import worker_slots

    assert parse_launch_options(["workers=3", "gpus=[0, 1]"]).workers == 3
    with pytest.raises(UserError, match="unknown config key 'launch.wokers'"):
        parse_launch_options(["wokers=3"])
    with pytest.raises(UserError, match="found no CUDA device; pass --launch workers=N"):
        worker_slots(LaunchOptions(), "cpu")
    assert worker_slots(LaunchOptions(workers=2), "cpu") == ["", ""]
    result = runner.invoke(app, ["run", "--preset", "smoke", "--launcher", "mpi"])
    assert result.exit_code == 2 and "unknown launcher 'mpi'; valid: gpus, local, slurm" in result.output
    assert "Usage" in runner.invoke(app, ["status", "--help"]).output
