"""The run-directory contract (runs.py) and the prerequisite runs a method declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from metabn_bench import runs
from metabn_bench.errors import UserError
from metabn_bench.methods import METHODS
from tests.helpers import tiny_train_config


def test_train_and_the_suite_name_a_run_the_same_way(tmp_path: Path) -> None:
    cfg = tiny_train_config(method="cutout", seed=3)
    name = runs.run_name(cfg)
    assert name.startswith("cutout-s3-")
    assert runs.default_run_dir(cfg, tmp_path) == tmp_path / "synthetic" / name
    assert runs.suite_run_dir(cfg, tmp_path) == tmp_path / "train" / name


def test_an_unfinished_run_is_refused_with_the_marker_named(tmp_path: Path) -> None:
    assert not runs.is_finished(tmp_path)
    with pytest.raises(UserError, match="no 'done' marker"):
        runs.require_finished(tmp_path)
    with pytest.raises(UserError, match="not a run directory"):
        runs.load_config(tmp_path)


def test_only_post_hoc_metabn_without_a_backbone_declares_a_prerequisite() -> None:
    for name in METHODS.names():
        if name != "metabn":
            assert METHODS.get(name).prerequisite(tiny_train_config(method=name)) is None
    metabn = METHODS.get("metabn")
    assert metabn.prerequisite(tiny_train_config(method="metabn")) is None  # episodic
    given = {"training_mode": "post_hoc", "backbone_run": "/runs/vanilla"}
    assert metabn.prerequisite(tiny_train_config(method="metabn", hparams=given)) is None
    cfg = tiny_train_config(method="metabn", epochs=4,
                            hparams={"training_mode": "post_hoc", "backbone_epochs": 2})
    needed = metabn.prerequisite(cfg)
    assert needed is not None and needed.name == "backbone"
    assert (needed.config.method, needed.config.epochs, needed.config.seed) == ("vanilla", 2, cfg.seed)
    assert needed.config.hparams == {}
