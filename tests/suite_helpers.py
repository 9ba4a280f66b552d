"""A tiny suite for the runner and launcher tests: seconds per run on one CPU thread."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Two runs of two epochs of two steps; one corruption x 5 severities + clean = 6 cells, under
# two protocols.
TINY_SUITE: dict[str, Any] = {
    "name": "tiny",
    "description": "tiny suite of the tests",
    "methods": ["vanilla"],
    "seeds": [0, 1],
    "train": {"arch": "wrn10_1", "epochs": 2, "device": "cpu",
              "data": {"dataset": "synthetic", "train_size": 128},
              "optim": {"batch_size": 64, "lr": 0.05}},
    "corrupt": {"preset": "cifar", "n_test": 20, "corruptions": ["contrast"]},
    "eval": {"protocols": ["none", "bn"], "batch_size": 10},
}


def write_preset(directory: Path, **changes: Any) -> Path:
    """The tiny suite (with top-level keys replaced) as a YAML preset file."""
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, **changes}))
    return path


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout first, one thread per process.

    One thread keeps the subprocesses' float results equal to an in-process run under
    torch.set_num_threads(1), and keeps them fast on a busy machine.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


class OneThread:
    """torch.set_num_threads(1) inside a `with` block (in-process runs that match the CLI's)."""

    def __enter__(self) -> None:
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.saved)


def final_tables(results: Path) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """summary.json rows and cells.csv without their timing fields: what must not change."""
    rows = [{k: v for k, v in r.items() if not k.startswith("train_cost")}  # measured time
            for r in json.loads((results / "summary.json").read_text())["rows"]]
    cells = pd.read_csv(results / "cells.csv").drop(columns=["seconds"])
    cells = cells.sort_values(["run_id", "protocol", "corruption", "severity"]).reset_index(drop=True)
    return rows, cells
