"""Cells a report lacks, and why: nothing is dropped silently.

Expected cells: for each corrupted set, the union of the (corruption, severity) cells that any
run evaluated on it, under every protocol that any run on that set used. A run's (protocol,
cell) that is absent from its rows was not evaluated; a run directory without a `done` marker
has not finished training; a finished one without eval.jsonl was never evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from metabn_bench.corruptions import names as cnames
from metabn_bench.evaluation.evaluate import EVAL_FILE
from metabn_bench.training.loop import DONE

NOT_EVALUATED = "not evaluated (cell absent from eval.jsonl)"
PROTOCOL_NOT_EVALUATED = "protocol not evaluated for this run"
NOT_FINISHED = f"run not finished (no '{DONE}' marker)"
NO_EVAL = f"finished but never evaluated (no {EVAL_FILE})"


def _severities(levels: list[int]) -> str:
    levels = sorted(levels)
    if levels == list(range(levels[0], levels[-1] + 1)) and len(levels) > 1:
        return f"severities {levels[0]}-{levels[-1]}"
    return ("severity " if len(levels) == 1 else "severities ") + ",".join(map(str, levels))


def _describe(cells: set[tuple[str, int]]) -> list[str]:
    """Missing cells grouped by corruption: 'contrast (severities 1-5)'."""
    by_corruption: dict[str, list[int]] = {}
    for corruption, severity in cells:
        by_corruption.setdefault(corruption, []).append(severity)
    names = cnames.canonical_order(list(by_corruption))
    return ["clean" if c == "clean" else f"{c} ({_severities(by_corruption[c])})" for c in names]


def missing_cells(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per (run, protocol) lacking expected cells: what is missing and why."""
    out: list[dict[str, Any]] = []
    if df.empty:
        return out
    for set_id, on_set in df.groupby("set_id", sort=False):
        expected = set(zip(on_set["corruption"], on_set["severity"].astype(int)))
        protocols = list(dict.fromkeys(on_set["protocol"]))
        for run_id, run in on_set.groupby("run_id", sort=False):
            for protocol in protocols:
                have_rows = run[run["protocol"] == protocol]
                have = set(zip(have_rows["corruption"], have_rows["severity"].astype(int)))
                lacking = expected - have
                if not lacking:
                    continue
                out.append({
                    "run_id": run_id, "method": run["method"].iloc[0],
                    "seed": int(run["seed"].iloc[0]), "protocol": protocol, "set_id": set_id,
                    "cells": len(lacking), "missing": "; ".join(_describe(lacking)),
                    "reason": PROTOCOL_NOT_EVALUATED if not have else NOT_EVALUATED,
                })
    return out


def run_status(paths: list[Path]) -> list[dict[str, Any]]:
    """Run directories under `paths` that contribute no rows: unfinished or never evaluated."""
    out = []
    seen: set[Path] = set()
    for path in paths:
        if not Path(path).is_dir():
            continue
        configs = [path / "config.json"] if (path / "config.json").is_file() else sorted(
            Path(path).rglob("config.json"))
        for config in configs:
            run_dir = config.parent
            if run_dir in seen or not ((run_dir / "env.json").exists() or (run_dir / DONE).exists()):
                continue  # a config.json that is not a run directory's
            seen.add(run_dir)
            if (run_dir / DONE).exists() and (run_dir / EVAL_FILE).exists():
                continue
            try:
                cfg = json.loads(config.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                cfg = {}
            out.append({"run_dir": str(run_dir), "method": cfg.get("method", "?"),
                        "seed": cfg.get("seed", "?"),
                        "reason": NO_EVAL if (run_dir / DONE).exists() else NOT_FINISHED})
    return out
