"""Bad input, every kind: each is one line on stderr, exit code 2, no traceback, nothing left.

Every case builds its own arguments (from a tiny trained run and corrupted set, copied before
they are tampered with) and names a fragment the message must contain. "Nothing left" means
the command's output (a new --out, a run's eval.jsonl, temporaries) does not appear.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from metabn_bench.cli import app

Case = Callable[[Path, Path, Path], list[str]]  # (tmp_path, run copy, set copy) -> argv


class _Code:
    """An object whose unpickling would run code (a malicious checkpoint's payload)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def _npy(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "images.npy", images)
        np.save(root / split / "labels.npy", labels)
    return root


def _empty_set(tmp: Path) -> str:
    return "npy:" + str(_npy(tmp / "empty", np.zeros((0, 32, 32, 3), np.uint8),
                             np.zeros(0, np.int64)))


def _gap_labels(tmp: Path) -> str:
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 15] * 2, np.int64)
    return "npy:" + str(_npy(tmp / "gap", np.zeros((20, 32, 32, 3), np.uint8), labels))


def _a_file(tmp: Path) -> str:
    path = tmp / "a-file"
    path.write_text("x")
    return str(path)


def _train(*extra: str) -> Case:
    return lambda tmp, run, cset: ["train", "--method", "vanilla", "--arch", "wrn10_1",
                                   "--epochs", "1", "--device", "cpu", "--no-progress",
                                   "--out", str(tmp / "out"), *extra]


def _corrupt(*extra: str) -> Case:
    return lambda tmp, run, cset: ["corrupt", "--dataset", "synthetic", "--n", "20",
                                   "--corruptions", "contrast", "--device", "cpu",
                                   "--no-progress", "--out", str(tmp / "out"), *extra]


def _evaluate(*extra: str) -> Case:
    return lambda tmp, run, cset: ["evaluate", str(run), "--corrupted", str(cset),
                                   "--device", "cpu", "--no-progress", *extra]


def _run(*sets: str) -> Case:
    def argv(tmp: Path, run: Path, cset: Path) -> list[str]:
        args = ["run", "--preset", "smoke", "--out", str(tmp / "out"), "--work",
                str(tmp / "work"), "--device", "cpu", "--no-progress"]
        for item in sets:
            args += ["--set", item]
        return args
    return argv


def _tamper(change: Callable[[Path, Path], None], then: Case) -> Case:
    def argv(tmp: Path, run: Path, cset: Path) -> list[str]:
        change(run, cset)
        return then(tmp, run, cset)
    return argv


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _manifest(cset: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads((cset / "manifest.json").read_text())
    edit(data)
    (cset / "manifest.json").write_text(json.dumps(data))


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


def _malicious(path: Path) -> None:
    torch.save({"weight": torch.zeros(1), "payload": _Code()}, path)


def _bad_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(_Code()))


CASES: dict[str, tuple[Case, str]] = {
    # train: ranges and names, before anything is written
    "train epochs -1": (_train("--epochs", "-1"), "epochs is -1; valid: an integer >= 1"),
    "train epochs 0": (_train("--epochs", "0"), "epochs is 0; valid"),
    "train lr nan": (_train("--set", "optim.lr=.nan"), "optim.lr is nan; valid"),
    "train lr negative": (_train("--set", "optim.lr=-0.1"), "optim.lr is -0.1"),
    "train lr inf": (_train("--set", "optim.lr=.inf"), "optim.lr is inf"),
    "train train_size -5": (_train("--set", "data.train_size=-5"), "data.train_size is -5"),
    "train batch size 0": (_train("--set", "optim.batch_size=0"), "optim.batch_size is 0"),
    "train std zero": (_train("--set", "data.std=[0,0,0]"), "data.std[0] is 0.0"),
    "train std two values": (_train("--set", "data.std=[1,1]"), "three numbers each"),
    "train mean nan": (_train("--set", "data.mean=[.nan,0,0]"), "data.mean[0] is nan"),
    "train momentum negative": (_train("--set", "optim.momentum=-1"), "optim.momentum is -1"),
    "train weight decay nan": (_train("--set", "optim.weight_decay=.nan"), "optim.weight_decay"),
    "train crop padding -1": (_train("--set", "data.crop_padding=-1"), "data.crop_padding is -1"),
    "train seed -1": (_train("--seed", "-1"), "seed is -1"),
    "train arch bogus": (_train("--arch", "bogus"), "unknown architecture 'bogus'"),
    "train method bogus": (lambda t, r, c: ["train", "--method", "bogus", "--out",
                                            str(t / "out")], "unknown method 'bogus'"),
    "train hparam bogus": (_train("--set", "hparams.bogus=1"), "bogus"),
    "train empty data set": (lambda t, r, c: _train("--dataset", _empty_set(t))(t, r, c),
                             "no labels"),
    "train labels above classes": (lambda t, r, c: _train("--dataset", _gap_labels(t))(t, r, c),
                                   "classes 9, 10, 11, 12, 13 ... have no image"),
    "train out is a file": (lambda t, r, c: ["train", "--method", "vanilla", "--out",
                                             _a_file(t)], "is a file"),
    # corrupt
    "corrupt batch size 0": (_corrupt("--batch-size", "0"), "batch_size is 0"),
    "corrupt n -5": (_corrupt("--n", "-5"), "is -5; valid: an integer >= 0"),
    "corrupt seed -3": (_corrupt("--seed", "-3"), "seed is -3"),
    "corrupt severity 6": (_corrupt("--severities", "1,6"), "invalid severities [1, 6]"),
    "corrupt preset bogus": (_corrupt("--preset", "bogus"), "valid: auto, cifar"),
    "corrupt corruption bogus": (_corrupt("--corruptions", "bogus"), "unknown corruption"),
    "corrupt backend bogus": (_corrupt("--backend", "bogus"), "unknown backend 'bogus'"),
    "corrupt empty data set": (lambda t, r, c: ["corrupt", "--dataset", _empty_set(t), "--out",
                                                str(t / "out")], "no labels"),
    "corrupt out is a file": (lambda t, r, c: ["corrupt", "--dataset", "synthetic", "--out",
                                               _a_file(t)], "is a file"),
    # evaluate: options, then a tampered run directory or corrupted set
    "evaluate batch size -1": (_evaluate("--batch-size", "-1"), "--batch-size is -1"),
    "evaluate protocol bogus": (_evaluate("--adapt", "bogus"), "test-time protocol 'bogus'"),
    "evaluate model.pt truncated": (_tamper(lambda r, c: _truncate(r / "model.pt"),
                                            _evaluate()), "truncated or corrupt"),
    "evaluate model.pt missing": (_tamper(lambda r, c: (r / "model.pt").unlink(), _evaluate()),
                                  "model.pt' does not exist"),
    "evaluate model.pt malicious": (_tamper(lambda r, c: _malicious(r / "model.pt"),
                                            _evaluate()), "refused: loading it could run code"),
    "evaluate model.pt plain pickle": (_tamper(lambda r, c: _bad_pickle(r / "model.pt"),
                                               _evaluate()), "cannot load"),
    "evaluate config.json corrupt": (_tamper(lambda r, c: (r / "config.json").write_text("{x"),
                                             _evaluate()), "config.json is not valid JSON"),
    "evaluate env.json corrupt": (_tamper(lambda r, c: (r / "env.json").write_text("[]"),
                                          _evaluate()), "env.json is missing or malformed"),
    "evaluate eval.jsonl malformed": (_tamper(lambda r, c: (r / "eval.jsonl").write_text("{x\n"),
                                              _evaluate()), "eval.jsonl is malformed"),
    "evaluate eval.jsonl wrong rows": (_tamper(lambda r, c: (r / "eval.jsonl").write_text("[1]\n"),
                                               _evaluate()), "row 1 is not an evaluation row"),
    "manifest not JSON": (_tamper(lambda r, c: (c / "manifest.json").write_text("{"),
                                  _evaluate()), "manifest.json is not valid JSON"),
    "manifest bytes not a number": (_tamper(lambda r, c: _manifest(c, lambda m: m["files"][
        "contrast"].update(bytes="many")), _evaluate()), "field 'files' is malformed"),
    "manifest file escapes the set": (_tamper(lambda r, c: _manifest(c, lambda m: m["files"][
        "contrast"].update(file="../x.npy")), _evaluate()), "field 'files' is malformed"),
    "manifest severities malformed": (_tamper(lambda r, c: _manifest(
        c, lambda m: m.update(severities=["one"])), _evaluate()), "field 'severities'"),
    "manifest n malformed": (_tamper(lambda r, c: _manifest(c, lambda m: m.update(n="x")),
                                     _evaluate()), "field 'n' is malformed"),
    "set incomplete": (_tamper(lambda r, c: _manifest(c, lambda m: m.update(
        planned=[*m["planned"], "fog"])), _evaluate()), "is incomplete: 4 of 5 corruptions made, "
                                                        "missing fog"),
    "set tampered": (_tamper(lambda r, c: _flip_byte(c / "contrast.npy"), _evaluate()),
                     "does not match its manifest hash"),
    # report
    "report out is a directory": (lambda t, r, c: ["report", str(r), "--out", str(t)],
                                  "is a directory; valid: a file name"),
    "report baseline bogus": (lambda t, r, c: ["report", str(r), "--baseline", "bogus"],
                              "unknown baseline 'bogus'"),
    "report format bogus": (lambda t, r, c: ["report", str(r), "--format", "pdf"],
                            "unknown format 'pdf'"),
    "report eval.jsonl malformed": (_tamper(lambda r, c: (r / "eval.jsonl").write_text("{x\n"),
                                            lambda t, r, c: ["report", str(r)]), "malformed"),
    # run: the whole configuration before any work
    "run protocol bogus": (_run("eval.protocols=[bogus]"), "test-time protocol 'bogus'"),
    "run arch bogus": (_run("train.arch=bogus"), "unknown architecture 'bogus'"),
    "run method bogus": (_run("methods=[vanilla,bogus]"), "unknown method 'bogus'"),
    "run no methods": (_run("methods=[]"), "methods is empty"),
    "run corrupt batch size 0": (_run("corrupt.batch_size=0"), "corrupt.batch_size is 0"),
    "run epochs 0": (_run("train.epochs=0"), "train.epochs is 0"),
    "run hparam bogus": (_run("method_hparams={augmix: {bogus: 1}}", "methods=[augmix]"),
                         "bogus"),
    "run out is a file": (lambda t, r, c: ["run", "--preset", "smoke", "--out", _a_file(t)],
                          "is a file"),
}


def _snapshot(*dirs: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for d in dirs if d.exists() for p in d.rglob("*")}


@pytest.fixture
def copies(tmp_path: Path, trained_run: Path, corrupted_set: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    cset = tmp_path / "set"
    shutil.copytree(trained_run, run)
    shutil.copytree(corrupted_set, cset)
    return run, cset


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, copies: tuple[Path, Path]) -> None:
    case, message = CASES[name]
    run, cset = copies
    work = tmp_path / "case"
    work.mkdir()
    argv = case(work, run, cset)
    before = _snapshot(run, cset, work)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output and "weights_only" not in result.output
    assert "this must never run" not in result.output
    assert not (work / "out").exists() or (work / "out").is_file()
    assert not (work / "work").exists()
    after = _snapshot(run, cset, work)
    assert set(after) == set(before), sorted(set(after) ^ set(before))  # nothing left behind


def test_a_subset_smaller_than_the_classes_says_so() -> None:
    """`--n 7` of 10 classes keeps 7 classes: allowed, with a warning that says it."""
    from metabn_bench.data.specs import load_split

    with pytest.warns(UserWarning, match="keeps 7 of the 10 classes"):
        data = load_split("synthetic", "test", n=7)
    assert len(data) == 7


def test_declared_classes_bound_the_labels(tmp_path: Path) -> None:
    """With dataset.json naming 3 classes, a label 5 is an error, not a sixth class."""
    root = _npy(tmp_path / "d", np.zeros((6, 32, 32, 3), np.uint8),
                np.array([0, 1, 2, 0, 1, 5], np.int64))
    (root / "dataset.json").write_text(json.dumps({"name": "d", "classes": ["a", "b", "c"]}))
    result = CliRunner().invoke(app, ["corrupt", "--dataset", f"npy:{root}", "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and "out of range for 3 classes" in result.stderr
    assert not (tmp_path / "out").exists()


def test_malicious_checkpoint_in_a_real_process(copies: tuple[Path, Path]) -> None:
    """Through the real entry point (where warnings reach stderr too): one line, no code run,
    none of torch's advice."""
    import os
    import subprocess
    import sys

    run, cset = copies
    (run / "model.pt").write_bytes(pickle.dumps(_Code()))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "metabn_bench", "evaluate", str(run),
                           "--corrupted", str(cset), "--device", "cpu", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused: loading it could run code" in lines[0], proc.stderr
    assert "weights_only" not in proc.stderr and "this must never run" not in proc.stdout
    assert not (run / "eval.jsonl").exists()
