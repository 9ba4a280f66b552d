"""Evaluating a model this toolkit did not train (evaluation/external.py): an entry point with
a state dict in the layouts model zoos ship, TorchScript, declared preprocessing, misfit
weights and bad entry points as one-line errors, and `report` on the results."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from metabn_bench import fsio
from metabn_bench.cli import app
from metabn_bench.data.store import open_set
from metabn_bench.errors import UserError
from metabn_bench.evaluation.evaluate import evaluate
from metabn_bench.evaluation.external import ExternalModel, Preprocessing, read_state
from metabn_bench.runs import EVAL_FILE, read_eval_rows

MODULE = """
from torch import nn


def build(width=4):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def build_wide():
    return build(8)


def build_no_bn():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
"""
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Any]:
    """A model file written here: its module, trained-looking weights (running statistics
    moved away from 0/1, so that BN adaptation changes them) and the module itself."""
    (tmp_path / "tinynet.py").write_text(textwrap.dedent(MODULE))
    torch.manual_seed(0)
    ns: dict[str, Any] = {}
    exec(textwrap.dedent(MODULE), ns)  # the same definition as the file, for direct checks
    model = ns["build"]()
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return {"dir": tmp_path, "module": str(tmp_path / "tinynet.py"), "model": model.eval(),
            "ns": ns}


def _save(obj: Any, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _direct_errors(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> int:
    """The number of errors of the model applied by hand, with the same preprocessing."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return int((model(x).argmax(1).numpy() != labels).sum())


def test_state_dict_layouts_of_model_zoos_load_the_same_weights(zoo: dict[str, Any],
                                                               tmp_path: Path) -> None:
    state = zoo["model"].state_dict()
    plain = _save(state, tmp_path / "plain.pt")
    wrapped = _save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
                    tmp_path / "wrapped.pt")
    for path in (plain, wrapped):
        got = read_state(path)
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    with pytest.raises(UserError, match="refused"):  # a pickled module would run code
        read_state(_save(zoo["model"], tmp_path / "pickled.pt"))


def test_cli_evaluates_an_entry_point_with_prefixed_weights_and_report_reads_it(
        zoo: dict[str, Any], small_set: Path, tmp_path: Path) -> None:
    state = {"state_dict": {f"module.{k}": v for k, v in zoo["model"].state_dict().items()}}
    weights = _save(state, tmp_path / "zoo.pt")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, [
        "evaluate", "--model", str(weights), "--entry", f"{zoo['module']}:build",
        "--out", str(out), "--corrupted", str(small_set), "--adapt", "none,bn",
        "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = read_eval_rows(out / EVAL_FILE)
    assert len(rows) == 2 * 5 and {r["protocol"] for r in rows} == {"none", "bn"}
    assert {r["model_sha256"] for r in rows} == {fsio.sha256_file(weights)}
    assert {r["model_file"] for r in rows} == {str(weights)} and {r["method"] for r in rows} == {"zoo"}
    cset = open_set(small_set)
    clean = next(r for r in rows if r["protocol"] == "none" and r["corruption"] == "clean")
    assert clean["errors"] == _direct_errors(zoo["model"], cset.clean(), cset.labels)
    assert json.loads((out / "model.json").read_text())["model_sha256"] == rows[0]["model_sha256"]
    report = runner.invoke(app, ["report", str(out), "--format", "markdown"])
    assert report.exit_code == 0, report.output
    assert "zoo" in report.output and "Traceback" not in report.output


def test_torchscript_and_module_name_entry_give_the_same_predictions(
        zoo: dict[str, Any], small_set: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pre = Preprocessing("0-1", MEAN, STD)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(zoo["model"]), str(scripted))
    weights = _save(zoo["model"].state_dict(), tmp_path / "plain.pt")
    monkeypatch.chdir(zoo["dir"])  # `tinynet:build` is found from the working directory
    by_entry = evaluate(ExternalModel(weights, tmp_path / "a", "tinynet:build", pre), small_set,
                        ("none",), device="cpu", progress=False)
    by_script = evaluate(ExternalModel(scripted, tmp_path / "b", None, pre), small_set,
                         ("none", "bn"), device="cpu", progress=False)
    errors = {(r["corruption"], r["severity"]): r["errors"] for r in by_entry}
    assert {(r["corruption"], r["severity"]): r["errors"] for r in by_script
            if r["protocol"] == "none"} == errors
    na = [r for r in by_script if r["protocol"] == "bn"]
    assert len(na) == 5 and all(r["applicable"] is False and "TorchScript" in r["reason"] for r in na)
    assert {r["arch"] for r in by_script} == {"torchscript"}


def test_bn_and_tent_are_not_applicable_to_a_model_without_batchnorm(
        zoo: dict[str, Any], small_set: Path, tmp_path: Path) -> None:
    weights = _save(zoo["ns"]["build_no_bn"]().state_dict(), tmp_path / "gn.pt")
    rows = evaluate(ExternalModel(weights, tmp_path / "out", f"{zoo['module']}:build_no_bn"),
                    small_set, ("none", "bn", "tent"), device="cpu", progress=False)
    assert all(r.get("applicable", True) for r in rows if r["protocol"] == "none")
    na = [r for r in rows if r["protocol"] != "none"]
    assert len(na) == 10 and all(r["applicable"] is False and "BatchNorm2d" in r["reason"]
                                 for r in na)


@pytest.mark.parametrize(("change", "message"), [
    ({"entry": "build_wide"}, "shape mismatches (file vs model) 0.weight (4, 3, 3, 3) vs (8, 3, 3, 3)"),
    ({"entry": "nope"}, "has no function 'nope'"),
    ({"module": "no_such_module_x"}, "does not import (ModuleNotFoundError"),
    ({"weights": "extra"}, "unexpected keys head.weight"),
    ({"std": "0,1,1"}, "--std has 0.0; valid: numbers > 0"),
    ({"out_is_file": True}, "is a file"),
])
def test_misfits_and_bad_options_are_one_line_exit_2(zoo: dict[str, Any], small_set: Path,
                                                    tmp_path: Path, change: dict[str, Any],
                                                    message: str) -> None:
    state = zoo["model"].state_dict()
    if change.get("weights") == "extra":
        state = {**state, "head.weight": torch.zeros(2)}
    weights = _save(state, tmp_path / "w.pt")
    out = tmp_path / "out"
    if change.get("out_is_file"):
        out.write_text("x")
    entry = f"{change.get('module', zoo['module'])}:{change.get('entry', 'build')}"
    result = CliRunner().invoke(app, [
        "evaluate", "--model", str(weights), "--entry", entry, "--out", str(out),
        "--corrupted", str(small_set), "--std", change.get("std", "1"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (out / EVAL_FILE).exists()


def test_preprocessing_scales_normalises_and_resizes() -> None:
    x = torch.full((2, 3, 8, 8), 0.5)
    y = Preprocessing("0-255", (127.5,), (63.75,), image_size=16).apply(x)
    assert y.shape == (2, 3, 16, 16) and torch.allclose(y, torch.zeros_like(y), atol=1e-6)
    with pytest.raises(UserError, match="--input-range"):
        Preprocessing("0-2").check()
