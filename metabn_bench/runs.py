"""The run-directory contract: what a run directory holds, how it is named, how it is read.

A run directory (one method, config and seed) holds:

- config.json: the resolved TrainConfig (every hparam filled in);
- env.json: versions, device, commit and the training data (source, size, class names);
- metrics.jsonl: one row per finished epoch;
- checkpoint.pt while training (every epoch, atomically), then model.pt and the `done` marker;
- eval.jsonl and per_image.npz once evaluated; running.json / failed.json under a suite.

Every wing reads and writes run directories through these names, so this module imports
nothing but the ground floor: reporting learns the names without loading training code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from metabn_bench.config import TrainConfig, config_hash, from_dict
from metabn_bench.errors import UserError

CONFIG = "config.json"
ENV = "env.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
DONE = "done"
EVAL_FILE = "eval.jsonl"
PER_IMAGE_FILE = "per_image.npz"


def run_name(cfg: TrainConfig) -> str:
    """<method>-s<seed>-<config hash>: the one name of a run directory, for `train` and suites.

    Readable and unique per configuration: the hash covers every resolved option, so a
    finished run is found again (and skipped) and a changed config gets a new directory.
    """
    return f"{cfg.method}-s{cfg.seed}-{config_hash(cfg)}"


def default_run_dir(cfg: TrainConfig, root: str | Path = "runs") -> Path:
    """<root>/<dataset>/<run name>/ (the dataset spec made path-safe): where `train` writes."""
    dataset = cfg.data.dataset.replace(":", "_").replace("/", "_").strip("_") or "data"
    return Path(root) / dataset / run_name(cfg)


def suite_run_dir(cfg: TrainConfig, work_dir: str | Path) -> Path:
    """<work>/train/<run name>/: where a suite puts the run of one (method, seed)."""
    return Path(work_dir) / "train" / run_name(cfg)


def is_finished(run_dir: str | Path) -> bool:
    """Whether the run finished training (its `done` marker exists)."""
    return (Path(run_dir) / DONE).exists()


def require_finished(run_dir: str | Path, hint: str = "") -> Path:
    """The run directory as a Path; a UserError when it has not finished training."""
    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise UserError(f"run '{run_dir}' has not finished training (no '{DONE}' marker){hint}")
    return run_dir


def load_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig stored in a run directory."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run directory (no {CONFIG})")
    return from_dict(TrainConfig, json.loads(path.read_text()))


def read_env(run_dir: str | Path) -> dict[str, Any]:
    """The run's env.json (provenance and its training data)."""
    return json.loads((Path(run_dir) / ENV).read_text())


def class_names(run_dir: str | Path) -> list[str]:
    """The class names of the data the run was trained on (from env.json)."""
    return [str(c) for c in read_env(run_dir)["data"]["classes"]]


def load_weights(run_dir: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The final weights (model.pt) of a finished run, loaded with weights_only."""
    return torch.load(Path(run_dir) / MODEL, map_location=device, weights_only=True)
