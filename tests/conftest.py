"""Shared fixtures: tiny data sets, a trained tiny run, the CLI runner. CPU only, seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from metabn_bench.config import CorruptConfig
from metabn_bench.corruptions.generate import corrupt_dataset
from metabn_bench.data.synthetic import make_split
from metabn_bench.training.loop import train
from tests.helpers import tiny_train_config

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def npy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """npy:DIR with train/ and test/ splits of synthetic images."""
    root = tmp_path_factory.mktemp("npyset")
    for split, n in (("train", 200), ("test", 60)):
        data = make_split(split, n)
        (root / split).mkdir()
        np.save(root / split / "images.npy", data.images)
        np.save(root / split / "labels.npy", data.labels)
    return root


@pytest.fixture(scope="session")
def corrupted_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corrupted set of 40 synthetic test images, four corruptions (three groups), 5 severities."""
    root = tmp_path_factory.mktemp("cset") / "set"
    names = ("gaussian_noise", "defocus_blur", "contrast", "jpeg_compression")
    corrupt_dataset(make_split("test", 40), root, CorruptConfig(preset="cifar", corruptions=names),
                    torch.device("cpu"), "synthetic", progress=False)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch vanilla run."""
    run_dir = tmp_path_factory.mktemp("runs") / "vanilla"
    train(tiny_train_config(), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic test images, two corruptions at severities 1 and 5 (5 cells): for tests
    that evaluate every cell many times (batch-size sweeps, models from elsewhere)."""
    root = tmp_path_factory.mktemp("smallset") / "set"
    corrupt_dataset(make_split("test", 12), root,
                    CorruptConfig(preset="cifar", corruptions=("gaussian_noise", "contrast"),
                                  severities=(1, 5)),
                    torch.device("cpu"), "synthetic", progress=False)
    return root
