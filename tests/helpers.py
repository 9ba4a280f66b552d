"""Helpers shared by the tests (imported explicitly; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metabn_bench.config import TrainConfig, from_dict


def _find_shared() -> Path:
    """../shared/data/cifar10 of the checkout (looked up from each parent, so a checkout one
    level deeper, e.g. a git worktree, finds it too)."""
    for parent in Path(__file__).resolve().parents[1:]:
        candidate = parent / "shared" / "data" / "cifar10"
        if candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


SHARED = _find_shared()


def tiny_train_config(**changes: object) -> TrainConfig:
    """A config that trains in about a second on the CPU."""
    base = {"method": "vanilla", "arch": "wrn10_1", "epochs": 1, "device": "cpu",
            "data": {"dataset": "synthetic", "train_size": 256},
            "optim": {"batch_size": 64, "lr": 0.05}}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return from_dict(TrainConfig, base)


def shared_lossless() -> tuple[np.ndarray, np.ndarray] | None:
    """The 1,000 pixel-exact CIFAR-10 test images from ../shared, or None where absent."""
    path = SHARED / "test1000-lossless.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return data["images"], data["labels"]


def assert_resume_is_exact(cfg: TrainConfig, tmp_path: Path, monkeypatch: Any) -> Path:
    """Train `cfg` straight and again interrupted after its first epoch (then resumed); assert
    that both runs end with identical weights. Returns the uninterrupted run directory."""
    import pytest
    import torch

    from metabn_bench.training import loop as train_mod

    train_mod.train(cfg, tmp_path / "straight", progress=False)
    original = train_mod._epoch
    calls = {"n": 0}

    def interrupted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_mod, "_epoch", original)
    train_mod.train(cfg, tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    return tmp_path / "straight"


def uniform_cell_rows(errors: dict[str, float]) -> list[dict[str, Any]]:
    """Eval rows of one vanilla run under `none`: every cell of a corruption has its error
    (`clean` as severity 0, every other corruption at severities 1-5)."""
    rows = []
    for corruption, error in errors.items():
        for severity in ((0,) if corruption == "clean" else range(1, 6)):
            rows.append({"run_id": "v", "method": "vanilla", "seed": 0, "arch": "a",
                         "protocol": "none", "set_id": "s", "test_batch_size": 10, "n": 10,
                         "corruption": corruption, "severity": severity, "error": error})
    return rows


def cli_ok(args: list[str]) -> str:
    """Run the CLI in-process, assert it exits 0, and return its output."""
    from typer.testing import CliRunner

    from metabn_bench.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.output)


def evaluate_copy_and_summarise(trained_run: Path, corrupted: Path, tmp_path: Path
                                ) -> dict[str, Any]:
    """Evaluate a copy of `trained_run` (its eval.jsonl stays as other tests expect) on
    `corrupted` through the CLI and return the first row of its JSON report."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cli_ok(["evaluate", str(run), "--corrupted", str(corrupted), "--device", "cpu",
            "--no-progress"])
    summary = tmp_path / "summary.json"
    cli_ok(["report", str(run), "--format", "json", "--out", str(summary)])
    return dict(json.loads(summary.read_text())["rows"][0])


def assert_seeded_per_image(images: np.ndarray, name: str, level: float) -> None:
    """A corruption's output at severity 3 depends on the seed and each image's index only:
    the same in other batch sizes and from another start index, different under another seed."""
    import torch

    from metabn_bench.corruptions.generate import corrupt_images

    cpu = torch.device("cpu")
    whole = corrupt_images(images, name, 3, level, 0, cpu)
    np.testing.assert_array_equal(whole, corrupt_images(images, name, 3, level, 0, cpu, 4))
    np.testing.assert_array_equal(whole[4:], corrupt_images(images[4:], name, 3, level, 0, cpu,
                                                            start_index=4))
    assert not np.array_equal(whole, corrupt_images(images, name, 3, level, 1, cpu))
