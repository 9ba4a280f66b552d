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
import warnings
from pathlib import Path
from typing import Any

import torch

from metabn_bench import fsio
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
# What identifies an evaluation row (one per protocol, test batch size and cell of a set).
EVAL_ROW_KEYS = ("set_id", "protocol", "test_batch_size", "corruption", "severity")


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
    """The TrainConfig stored in a run directory (a one-line UserError if it is unreadable)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run directory (no {CONFIG})")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); delete the run directory and train "
                        "again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object of config keys; delete the run "
                        "directory and train again")
    return from_dict(TrainConfig, data)


def read_env(run_dir: str | Path) -> dict[str, Any]:
    """The run's env.json (provenance and its training data); a one-line UserError if unreadable."""
    path = Path(run_dir) / ENV
    try:
        env = json.loads(path.read_text())
    except (OSError, ValueError):
        env = None
    if not isinstance(env, dict):
        raise UserError(f"{path} is missing or malformed (not a JSON object); delete the run "
                        "directory and train again")
    return env


def class_names(run_dir: str | Path) -> list[str]:
    """The class names of the data the run was trained on (from env.json)."""
    classes = read_env(run_dir).get("data", {}).get("classes")
    if not isinstance(classes, list) or not classes:
        raise UserError(f"{Path(run_dir) / ENV} is missing or malformed (no data.classes); delete "
                        "the run directory and train again")
    return [str(c) for c in classes]


def load_tensors(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """torch.load(weights_only=True) with every failure one line naming the file.

    A file that is missing, truncated or not a plain tensor file (a pickle that would run
    code) is refused; torch's own message is not shown, since it can advise retrying with
    weights_only=False, which would run the file's code.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"'{path}' does not exist; re-run the train command of "
                        f"'{path.parent}' to (re)make it")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # any failure at all means the file cannot be trusted
        why = ("it holds objects other than tensors (refused: loading it could run code)"
               if "weights_only" in str(exc) or "nsupported" in str(exc)
               else "it is truncated or corrupt")
        raise UserError(f"cannot load '{path}': {why}; delete it and re-run the train command "
                        f"of '{path.parent}'") from None


def load_weights(run_dir: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The final weights (model.pt) of a finished run, loaded safely (see load_tensors)."""
    return load_tensors(Path(run_dir) / MODEL, device)


def is_applicable(row: dict[str, Any]) -> bool:
    """False for a row that records a protocol as not applicable to the run (`applicable`:
    false, with its `reason`; no errors): such rows carry no error and enter no metric."""
    return row.get("applicable", True) is not False


def read_eval_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an eval.jsonl; a one-line UserError for a malformed line or row."""
    try:
        rows = fsio.read_jsonl(path)
    except ValueError as exc:
        raise UserError(f"{path} is malformed ({exc}); delete it (or the bad line) and run "
                        "evaluate again") from None
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or any(k not in row for k in EVAL_ROW_KEYS):
            raise UserError(f"{path}: row {i} is not an evaluation row (needs "
                            f"{', '.join(EVAL_ROW_KEYS)}); delete it and run evaluate again")
    return rows
