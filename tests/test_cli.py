"""The command line: help, listings, the whole pipeline, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from metabn_bench.cli import app

COMMANDS = ["list", "corrupt", "train", "evaluate", "report", "check", "run"]


def _ok(runner: CliRunner, args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _fails(runner: CliRunner, args: list[str], message: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert message in result.output, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(runner: CliRunner, command: str) -> None:
    assert "Usage" in _ok(runner, [command, "--help"])


@pytest.mark.parametrize(("sub", "options"), [
    ("ablation", ["--corrupted", "--out", "--note", "--diagnostics", "--test-batch-size"]),
    ("control", ["--work", "--corrupted", "--results", "--preset", "--set", "--hparam"]),
    ("record", ["--results"]),
    ("diagnostics", ["--severity", "--n", "--device", "--json"])])
def test_analysis_subcommands_keep_their_options(runner: CliRunner, sub: str, options: list[str]) -> None:
    text = _ok(runner, ["analysis", sub, "--help"])
    assert all(option in text for option in options), text


def test_top_level_help_and_version(runner: CliRunner) -> None:
    text = _ok(runner, ["--help"])
    assert all(c in text for c in COMMANDS)
    assert "metabn-bench 0." in _ok(runner, ["--version"])


@pytest.mark.parametrize(("kind", "expected"), [
    ("methods", "vanilla"), ("corruptions", "gaussian_noise"), ("archs", "wrn40_2"),
    ("datasets", "synthetic"), ("presets", "smoke"), ("protocols", "tent"),
])
def test_list(runner: CliRunner, kind: str, expected: str) -> None:
    assert expected in _ok(runner, ["list", kind])


def test_pipeline_corrupt_train_evaluate_report_check(runner: CliRunner, tmp_path: Path) -> None:
    cset = tmp_path / "set"
    _ok(runner, ["corrupt", "--dataset", "synthetic", "--out", str(cset), "--n", "30",
                 "--corruptions", "contrast,gaussian_noise", "--severities", "1,5",
                 "--preset", "cifar", "--device", "cpu", "--no-progress"])
    assert np.load(cset / "contrast.npy").shape == (60, 32, 32, 3)
    run = tmp_path / "run"
    _ok(runner, ["train", "--method", "vanilla", "--dataset", "synthetic", "--arch", "wrn10_1",
                 "--epochs", "1", "--set", "data.train_size=128", "--set", "optim.batch_size=32",
                 "--out", str(run), "--device", "cpu", "--no-progress"])
    text = _ok(runner, ["evaluate", str(run), "--corrupted", str(cset), "--adapt", "none,bn",
                        "--device", "cpu", "--no-progress"])
    assert "| vanilla" in text and "bn" in text
    for fmt in ("markdown", "latex", "csv", "json", "html"):
        out = _ok(runner, ["report", str(run), "--format", fmt])
        assert "vanilla" in out
    summary = tmp_path / "summary.json"
    _ok(runner, ["report", str(run), "--format", "json", "--out", str(summary)])
    data = json.loads(summary.read_text())
    assert data["rows"][0]["corruptions"] == ["gaussian_noise", "contrast"]
    assert "provenance" in data
    assert "pass" in _ok(runner, ["check", "--baseline", str(summary), "--current", str(summary),
                                  "--tolerance", "0"])


def test_check_reports_moved_numbers_with_exit_1(runner: CliRunner, tmp_path: Path) -> None:
    row = {"method": "vanilla", "protocol": "none", "n_seeds": 1, "clean_error": 10.0, "mce": 20.0}
    base = {"schema": "metabn-bench summary v1", "provenance": {}, "rows": [row]}
    moved = {**base, "rows": [{**row, "mce": 21.0}]}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(moved))
    result = runner.invoke(app, ["check", "--baseline", str(tmp_path / "a.json"), "--current",
                                 str(tmp_path / "b.json"), "--tolerance", "0.5"])
    assert result.exit_code == 1
    assert "vanilla [none] mce: 20.0 -> 21.0 (+1.000 points" in result.output
    ok = runner.invoke(app, ["check", "--baseline", str(tmp_path / "a.json"), "--current",
                             str(tmp_path / "b.json"), "--tolerance", "1.5"])
    assert ok.exit_code == 0
    (tmp_path / "c.json").write_text("{not json")
    _fails(runner, ["check", "--baseline", str(tmp_path / "c.json"), "--current",
                    str(tmp_path / "b.json")], "is not valid JSON")


def test_run_preset_end_to_end(runner: CliRunner, tmp_path: Path) -> None:
    out = _ok(runner, ["run", "--preset", "smoke", "--out", str(tmp_path / "res"),
                       "--work", str(tmp_path / "work"), "--device", "cpu", "--no-progress",
                       "--set", "train.epochs=1", "--set", "train.data.train_size=128",
                       "--set", "corrupt.n_test=20", "--set", "eval.protocols=[none]",
                       # two corruptions and three methods (a BN, a batch-independent and a
                       # multi-branch norm): every method and corruption runs in the gate's suite
                       "--set", "corrupt.corruptions=[gaussian_noise,contrast]",
                       "--set", "methods=[vanilla,gn,bn_embeddings]"])
    assert all(f"| {name} " in out for name in ("vanilla", "gn", "bn_embeddings"))
    for name in ("cells.csv", "summary.json", "report.md"):
        assert (tmp_path / "res" / name).exists()
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert summary["provenance"]["preset"] == "smoke"
    assert {"method", "protocol", "n_seeds", "clean_error", "mce", "corruptions"} <= set(
        summary["rows"][0])


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--method", "dropout9"], "unknown method 'dropout9'; valid: "),
    (["train", "--method", "vanilla", "--arch", "vgg"], "unknown architecture 'vgg'; valid: "),
    (["train", "--method", "vanilla", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["train", "--method", "vanilla", "--dataset", "mnist"], "unknown dataset 'mnist'; valid: "),
    (["train", "--method", "vanilla", "--dataset", "npy:/no/where"], "does not exist"),
    (["train", "--method", "vanilla", "--config", "/no/such.yaml"], "does not exist"),
    (["corrupt", "--dataset", "synthetic", "--out", "/tmp/x", "--corruptions", "rain"],
     "unknown corruption 'rain'; valid: "),
    (["corrupt", "--dataset", "synthetic", "--out", "/tmp/x", "--severities", "0,9"],
     "invalid severities"),
    (["run", "--preset", "imagenet-huge"], "unknown preset 'imagenet-huge'; valid: "),
    (["evaluate", "/no/run", "--corrupted", "/no/set"], "not finished training"),
    (["list", "everything"], "unknown list 'everything'; valid: "),
    (["report", "/no/results"], "does not exist"),
    (["train", "--method", "vanilla", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line_exit_2(runner: CliRunner, args: list[str], message: str) -> None:
    output = _fails(runner, args, message)
    assert len(output.strip().splitlines()) == 1


def test_bad_data_leaves_nothing_behind(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "images.npy", np.zeros((8, 32, 32, 3), np.float32))
    np.save(data / "labels.npy", np.zeros(8, np.int64))
    out = tmp_path / "out"
    _fails(runner, ["corrupt", "--dataset", f"npy:{data}", "--out", str(out)], "must be uint8")
    assert not out.exists()
    np.save(data / "images.npy", np.zeros((8, 32, 32, 3), np.uint8))
    np.save(data / "labels.npy", np.zeros(5, np.int64))
    _fails(runner, ["corrupt", "--dataset", f"npy:{data}", "--out", str(out)], "5 labels do not match 8")
    assert not out.exists()


def test_the_installed_entry_point_exits_2_on_bad_input() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "metabn_bench", "train", "--method", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown method 'nope'; valid: ")
    assert "Traceback" not in proc.stderr


def test_readme_usage_lists_every_option() -> None:
    """Every option and argument of every command (as --help knows them) is in README's usage."""
    import typer.main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    usage = readme.split("## Usage", 1)[1].split("```", 2)[1]
    lines = {" ".join(line.split()[1:3]): line for line in usage.splitlines() if line.strip()}

    def walk(cmd: object, prefix: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*prefix, name])
        if getattr(cmd, "commands", None) is not None:
            return
        key = " ".join(prefix) if len(prefix) == 2 else prefix[0]
        line = next((v for k, v in lines.items() if k.startswith(key)), "")
        assert line, f"no usage line for {key}"
        if len(prefix) == 2:  # a sub-app's command (gate exact, analysis ablation): its own line
            line = next(v for v in usage.splitlines() if v.split()[1:3] == prefix)
        for param in cmd.params:  # type: ignore[attr-defined]
            opts = [o for o in param.opts if o.startswith("--")]
            if opts:
                assert any(o in line for o in opts), f"{key}: {opts[0]} missing from README usage"

    walk(typer.main.get_command(app), [])
