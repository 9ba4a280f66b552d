"""Faults: kill -9 at random points, two commands on one output, a full disk, tampered sets,
the umask. Commands that are killed run as real processes (the worktree's code); resuming
and the reference runs are in-process, which keeps the file fast.

A kill lands at a random moment after the command has started writing; the seed of that
moment is in every assertion message, so a failure can be replayed with FAULT_SEED=<seed>.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metabn_bench import fsio
from metabn_bench.cli import app
from metabn_bench.config import CorruptConfig
from metabn_bench.corruptions.generate import corrupt_dataset
from metabn_bench.data.synthetic import make_split
from metabn_bench.evaluation.evaluate import evaluate
from metabn_bench.training.loop import train
from tests.helpers import tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("FAULT_SEED", time.time_ns() % 100_000))
CORRUPT_ARGS = ["--dataset", "synthetic", "--n", "100", "--preset", "cifar", "--corruptions",
                "gaussian_noise,contrast,defocus_blur", "--severities", "1,3,5", "--device",
                "cpu", "--no-progress"]


def _env() -> dict[str, str]:
    """The worktree's package first on the path; one thread (the machine is shared)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "metabn_bench", *args]


def _ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _kill_at_random(cmd: list[str], started: Path, window: float, rng: random.Random) -> float:
    """Start `cmd`, wait until `started` exists (the command is writing), then SIGKILL it
    after a random delay within `window` seconds; returns the delay."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=ROOT)
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    delay = rng.uniform(0, window)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read() if proc.stderr else ""
    return delay


def _no_temporaries(root: Path) -> None:
    left = [p for p in root.rglob("*.tmp")]
    assert not left, left


@pytest.fixture
def one_thread() -> object:
    """Torch on one thread, as in the killed process (other thread counts can round differently)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# kill -9 at a random point, then resume: the same bytes (or table) as an uninterrupted run


def test_corrupt_killed_then_resumed_is_byte_identical(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ref = tmp_path / "ref"
    assert _ok("corrupt", *CORRUPT_ARGS, "--out", str(ref))
    out = tmp_path / "killed"
    delay = _kill_at_random(_cli("corrupt", *CORRUPT_ARGS, "--out", str(out)), out, 3.0, rng)
    _ok("corrupt", *CORRUPT_ARGS, "--out", str(out))
    msg = f"FAULT_SEED={SEED}, killed after {delay:.2f}s"
    for path in sorted(ref.glob("*.npy")):
        assert (out / path.name).read_bytes() == path.read_bytes(), (path.name, msg)
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (ref, out))
    assert a["files"] == b["files"] and a["set_id"] == b["set_id"], msg
    _no_temporaries(out)
    assert not (out / ".parts").exists(), msg


def test_train_killed_then_resumed_has_identical_weights(tmp_path: Path, one_thread: None) -> None:
    rng = random.Random(SEED + 1)
    args = ["train", "--method", "vanilla", "--arch", "wrn10_1", "--epochs", "3", "--device",
            "cpu", "--no-progress", "--set", "data.train_size=512", "--set",
            "optim.batch_size=64"]
    _ok(*args, "--out", str(tmp_path / "ref"))
    out = tmp_path / "killed"
    delay = _kill_at_random(_cli(*args, "--out", str(out)), out / "env.json", 4.0, rng)
    _ok(*args, "--out", str(out))
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    b = torch.load(out / "model.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), (key, f"FAULT_SEED={SEED + 1}, killed after {delay:.2f}s")
    assert [r["loss"] for r in fsio.read_jsonl(tmp_path / "ref" / "metrics.jsonl")] == \
        [r["loss"] for r in fsio.read_jsonl(out / "metrics.jsonl")]
    _no_temporaries(out)


def _table(run_dir: Path) -> list[tuple]:
    rows = fsio.read_jsonl(run_dir / "eval.jsonl")
    return sorted((r["protocol"], r["corruption"], r["severity"], r["errors"]) for r in rows)


def test_evaluate_killed_then_resumed_gives_the_same_table(
        tmp_path: Path, trained_run: Path, corrupted_set: Path, one_thread: None) -> None:
    rng = random.Random(SEED + 2)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    shutil.copytree(trained_run, ref)
    shutil.copytree(trained_run, out)
    evaluate(ref, corrupted_set, ("bn",), device="cpu", progress=False)
    cmd = _cli("evaluate", str(out), "--corrupted", str(corrupted_set), "--adapt", "bn",
               "--device", "cpu", "--no-progress")
    delay = _kill_at_random(cmd, out / ".lock", 2.0, rng)
    evaluate(out, corrupted_set, ("bn",), device="cpu", progress=False)
    assert _table(out) == _table(ref), f"FAULT_SEED={SEED + 2}, killed after {delay:.2f}s"
    _no_temporaries(out)


@pytest.mark.slow
def test_run_killed_then_resumed_gives_the_same_table(tmp_path: Path, one_thread: None) -> None:
    rng = random.Random(SEED + 3)
    sets = ["methods=[vanilla,cutout]", "train.epochs=2", "train.data.train_size=256",
            "corrupt.n_test=40", "eval.protocols=[none]"]
    args = ["run", "--preset", "smoke", "--device", "cpu", "--no-progress"]
    for item in sets:
        args += ["--set", item]
    _ok(*args, "--out", str(tmp_path / "ref"), "--work", str(tmp_path / "ref-work"))
    out, work = tmp_path / "killed", tmp_path / "killed-work"
    delay = _kill_at_random(_cli(*args, "--out", str(out), "--work", str(work)), work, 15.0, rng)
    _ok(*args, "--out", str(out), "--work", str(work))
    import pandas as pd

    cols = ["method", "seed", "protocol", "corruption", "severity", "errors"]
    a = pd.read_csv(tmp_path / "ref" / "cells.csv")[cols].sort_values(cols).reset_index(drop=True)
    b = pd.read_csv(out / "cells.csv")[cols].sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, obj=f"FAULT_SEED={SEED + 3}, killed after {delay:.2f}s")
    _no_temporaries(work)


def test_resumed_corrupt_removes_stale_temporaries(tmp_path: Path) -> None:
    args = ["corrupt", "--dataset", "synthetic", "--n", "20", "--corruptions", "contrast",
            "--severities", "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path)]
    (tmp_path / ".parts").mkdir()
    stale = [tmp_path / ".contrast.npy.k1l1e2.tmp", tmp_path / ".parts" / ".contrast-s1.npy.x.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    _ok(*args)
    assert not any(p.exists() for p in stale)


# ---------------------------------------------------------------------------------------------
# two commands on one output


def _hold_lock(directory: Path) -> subprocess.Popen:
    """Another process holding `directory`'s lock (as a running command would)."""
    code = ("import sys, time; from metabn_bench.runlock import RunLock; "
            "lock = RunLock(sys.argv[1], stage='test'); assert lock.acquire(); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("command", ["corrupt", "train", "evaluate"])
def test_second_command_on_a_busy_output_stops_at_once(
        command: str, tmp_path: Path, trained_run: Path, corrupted_set: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    argv = {
        "corrupt": ["corrupt", "--dataset", "synthetic", "--n", "20", "--corruptions",
                    "contrast", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "set")],
        "train": ["train", "--method", "vanilla", "--arch", "wrn10_1", "--epochs", "1",
                  "--set", "data.train_size=128", "--device", "cpu", "--no-progress",
                  "--out", str(tmp_path / "new-run")],
        "evaluate": ["evaluate", str(run), "--corrupted", str(corrupted_set), "--device",
                     "cpu", "--no-progress"],
    }[command]
    target = {"corrupt": tmp_path / "set", "train": tmp_path / "new-run", "evaluate": run}[command]
    holder = _hold_lock(target)
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"is in use by pid {holder.pid}" in lines[0], result.stderr
    assert (not (target / "eval.jsonl").exists() and not (target / "config.json").exists()) \
        or (command == "evaluate" and not (run / "eval.jsonl").exists())


def test_two_concurrent_evaluates_lose_no_rows(
        tmp_path: Path, trained_run: Path, corrupted_set: Path) -> None:
    """`evaluate --adapt none` and `--adapt bn` at once on one run (the issue's case: the last
    writer's eval.jsonl replaced the other's rows). Each exits 0 with all its rows on disk, or
    2 saying the run is in use; never 0 with rows missing."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    procs = {spec: subprocess.Popen(
        _cli("evaluate", str(run), "--corrupted", str(corrupted_set), "--adapt", spec,
             "--device", "cpu", "--no-progress"),
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for spec in ("none", "bn")}
    codes = {spec: p.wait(timeout=300) for spec, p in procs.items()}
    errors = {spec: p.stderr.read() if p.stderr else "" for spec, p in procs.items()}
    assert 0 in codes.values() and set(codes.values()) <= {0, 2}, (codes, errors)
    rows = _table(run)
    assert len(rows) == len(set(rows))
    for spec, code in codes.items():
        mine = [r for r in rows if r[0] == spec]
        if code == 0:
            assert len(mine) == 1 + 4 * 5, (spec, len(mine), codes)
        else:  # the one that lost the race says why, in one line, and wrote nothing
            assert "is in use" in errors[spec] and len(errors[spec].strip().splitlines()) == 1
            assert not mine


def test_evaluate_merges_rows_written_meanwhile(
        tmp_path: Path, trained_run: Path, corrupted_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that appears on disk during an evaluation (written by a tool that ignores the
    lock) is kept: each write merges with the file, it never replaces it whole."""
    from metabn_bench.evaluation import evaluate as ev

    run = tmp_path / "run"
    # Without the shared fixture's rows: every cell must really be evaluated here.
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval.jsonl", "per_image.npz"))
    foreign = {"set_id": "other-set", "protocol": "none", "test_batch_size": 1,
               "corruption": "clean", "severity": 0, "method": "x", "errors": 0}
    original = ev.Evaluator.cell
    calls = {"n": 0}

    def cell(self: object, *args: object) -> ev.CellResult:
        calls["n"] += 1
        if calls["n"] == 3:
            rows = fsio.read_jsonl(run / "eval.jsonl")
            fsio.write_jsonl(run / "eval.jsonl", [*rows, foreign])
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ev.Evaluator, "cell", cell)
    evaluate(run, corrupted_set, ("none",), device="cpu", progress=False)
    rows = fsio.read_jsonl(run / "eval.jsonl")
    assert foreign in rows and len(rows) == 1 + 1 + 4 * 5


# ---------------------------------------------------------------------------------------------
# a full disk


@pytest.mark.parametrize("command", ["corrupt", "train"])
def test_disk_full_is_one_line(command: str, tmp_path: Path) -> None:
    """NumPy's and torch's writers both report a full disk as one line naming the file."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare to mount a small tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs "
                            f"{mount}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
    args = {"corrupt": ["corrupt", *CORRUPT_ARGS],
            "train": ["train", "--method", "vanilla", "--arch", "wrn16_2", "--epochs", "1",
                      "--set", "data.train_size=64", "--set", "optim.batch_size=32", "--device",
                      "cpu", "--no-progress"]}[command]
    py = " ".join(_cli(*args, "--out", str(mount / "set")))
    proc = subprocess.run(["unshare", "-rm", "sh", "-c",
                           f"mount -t tmpfs -o size=120k tmpfs {mount} && {py}; "
                           f"rc=$?; ls -A {mount}/set; exit $rc"],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full writing "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert ".tmp" not in proc.stdout  # the temporary of the failed write is gone


# ---------------------------------------------------------------------------------------------
# tampered sets


def test_truncated_set_file_is_refused(tmp_path: Path, trained_run: Path,
                                       corrupted_set: Path) -> None:
    cset = tmp_path / "set"
    shutil.copytree(corrupted_set, cset)
    path = cset / "gaussian_noise.npy"
    path.write_bytes(path.read_bytes()[:-100])
    result = CliRunner().invoke(app, ["evaluate", str(trained_run), "--corrupted", str(cset),
                                      "--device", "cpu", "--no-progress"])
    assert result.exit_code == 2 and "gaussian_noise.npy" in result.stderr, result.output


def test_deleted_manifest_warns_that_hashes_are_off(tmp_path: Path, trained_run: Path,
                                                    corrupted_set: Path) -> None:
    cset = tmp_path / "set"
    shutil.copytree(corrupted_set, cset)
    (cset / "manifest.json").unlink()
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with pytest.warns(UserWarning, match="no file is checked against a hash"):
        evaluate(run, cset, ("none",), device="cpu", progress=False)


def test_interrupted_set_is_refused_until_finished(tmp_path: Path, trained_run: Path) -> None:
    """A corrupt stopped after 1 of 2 corruptions: evaluate names the missing one."""
    from metabn_bench.corruptions import generate

    cset = tmp_path / "set"
    cfg = CorruptConfig(preset="cifar", corruptions=("contrast", "gaussian_noise"),
                        severities=(1,))
    original = generate.SetWriter.finish
    calls = {"n": 0}

    def finish(self: object, *args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        original(self, *args)  # type: ignore[arg-type]

    generate.SetWriter.finish = finish  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            corrupt_dataset(make_split("test", 20), cset, cfg, torch.device("cpu"), "synthetic",
                            progress=False)
    finally:
        generate.SetWriter.finish = original  # type: ignore[method-assign]
    result = CliRunner().invoke(app, ["evaluate", str(trained_run), "--corrupted", str(cset),
                                      "--device", "cpu", "--no-progress"])
    assert result.exit_code == 2
    assert "is incomplete: 1 of 2 corruptions made, missing contrast" in result.stderr


# ---------------------------------------------------------------------------------------------
# the umask


def _modes(root: Path) -> set[tuple[str, int]]:
    return {("d" if p.is_dir() else "f", stat.S_IMODE(p.stat().st_mode))
            for p in [root, *root.rglob("*")] if p.name not in (".lock",)}


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_every_output_file_gets_the_umask_mode(mask: int, tmp_path: Path) -> None:
    old = os.umask(mask)
    try:
        cset = tmp_path / "set"
        corrupt_dataset(make_split("test", 20), cset,
                        CorruptConfig(preset="cifar", corruptions=("contrast",), severities=(1,)),
                        torch.device("cpu"), "synthetic", progress=False)
        run = tmp_path / "run"
        train(tiny_train_config(data={"train_size": 64}), run, progress=False)
        evaluate(run, cset, ("none",), device="cpu", progress=False)
        out = tmp_path / "report"
        _ok("report", str(run), "--format", "html", "--out", str(out / "report.html"),
            "--plots", str(out / "plots"))
    finally:
        os.umask(old)
    want = {("f", 0o666 & ~mask), ("d", 0o777 & ~mask)}
    for root in (cset, run, out):
        assert _modes(root) <= want, (root, sorted(_modes(root) - want))
    assert any(p.suffix == ".png" for p in (out / "plots").iterdir())
