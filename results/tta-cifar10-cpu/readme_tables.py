"""Print the README's batch-size and continual tables from this folder's cells.csv files.

    python results/tta-cifar10-cpu/readme_tables.py

Each entry is a mean error (%) over the corruption cells at severity 5 (the clean cell is left
out), per model (method and training seed) and protocol, computed from the per-cell rows that run.sh's reports
wrote; nothing is typed by hand. Also prints each model's mean ECE over those cells per protocol.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
NAMES = {"vanilla": "vanilla", "augmix": "AugMix", "metabn": "Meta-BN",
         "augmix_metabn": "AugMix + Meta-BN"}
BATCHES = (1, 2, 4, 16, 64, 200)


def _shifted(path: Path) -> pd.DataFrame:
    cells = pd.read_csv(path)
    return cells[cells["corruption"] != "clean"]


def _order(methods: pd.Series) -> list[str]:
    return sorted(methods.unique(), key=lambda m: list(NAMES).index(m) if m in NAMES else 99)


def _models(cells: pd.DataFrame) -> list[tuple[str, int, pd.DataFrame]]:
    """(method, training seed, its rows) in the README's order."""
    return [(method, int(seed), rows)
            for method in _order(cells["method"])
            for seed, rows in cells[cells["method"] == method].groupby("seed")]


def batch_size_table() -> str:
    """Mean error over the sweep's cells against the test batch size, per model and protocol."""
    cells = _shifted(HERE / "batch-size" / "cells.csv")
    lines = ["| model | seed | protocol | " + " | ".join(
        ("batch 1" if b == 1 else str(b)) for b in BATCHES) + " |",
        "|---|---|---|" + "---|" * len(BATCHES)]
    for method, seed, of_model in _models(cells):
        for protocol in ("none", "bn", "bn:prior=16", "tent"):
            rows = of_model[of_model["sweep_protocol"] == protocol]
            if rows.empty:  # bn:prior=16 joined the sweep after the first models
                continue
            means = rows.groupby("test_batch_size")["error"].mean()
            lines.append(f"| {NAMES.get(method, method)} | {seed} | `{protocol}` | "
                         + " | ".join(f"{means[b]:.2f}" for b in BATCHES) + " |")
    return "\n".join(lines)


def continual_table() -> str:
    """Mean error over the 15 cells, per cell with reset and as one stream without reset."""
    cells = _shifted(HERE / "continual" / "cells.csv")
    columns = [("none", "`none`"), ("bn", "`bn` per cell"),
               ("bn@continual,reset=never,seed=0", "`bn` continual"),
               ("tent", "`tent` per cell"), ("tent@continual,reset=never,seed=0", "`tent` continual")]
    lines = ["| model | seed | " + " | ".join(name for _, name in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for method, seed, rows in _models(cells):
        means = rows.groupby("protocol")["error"].mean()
        lines.append(f"| {NAMES.get(method, method)} | {seed} | "
                     + " | ".join(f"{means[p]:.2f}" for p, _ in columns) + " |")
    return "\n".join(lines)


def calibration_lines() -> str:
    """Mean ECE (%) over the 15 shifted cells and on the clean cell, per model and protocol."""
    cells = pd.read_csv(HERE / "continual" / "cells.csv")
    lines = []
    for method, seed, rows in _models(cells[cells["protocol"].isin(["none", "bn", "tent"])]):
        shifted = rows[rows["corruption"] != "clean"].groupby("protocol")["ece"].mean()
        clean = rows[rows["corruption"] == "clean"].groupby("protocol")["ece"].mean()
        lines.append(f"{NAMES.get(method, method)} seed {seed}: mean ECE under shift "
                     + ", ".join(f"{p} {shifted[p]:.1f}" for p in ("none", "bn", "tent"))
                     + f"; clean (none) {clean['none']:.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(batch_size_table(), continual_table(), calibration_lines(), sep="\n\n")
