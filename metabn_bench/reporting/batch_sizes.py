"""Error against test batch size, from the rows of a batch-size sweep (`evaluate --batch-sizes`).

Batch-adaptive protocols (BN adaptation, Schneider et al., NeurIPS 2020; Tent, Wang et al.,
ICLR 2021) estimate statistics from each test batch, so their error depends on the batch size
while that of a model evaluated as trained (`none`) does not. A sweep's rows carry
`sweep_protocol`, the protocol label without the batch size; this view groups by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from metabn_bench.corruptions import names as cnames

WHAT = {"mce": "mean error (%) over the common corruption cells",
        "clean": "clean error (%)"}


def batch_size_table(frame: pd.DataFrame, what: str = "mce") -> pd.DataFrame:
    """(method, protocol) x test batch size: per run the mean error over its common corruption
    cells (`mce`) or its clean error (`clean`), then the mean over runs (seeds).

    Empty when the frame holds no sweep rows.
    """
    if what not in WHAT:
        raise ValueError(f"what must be one of {', '.join(WHAT)}")
    if frame.empty or "sweep_protocol" not in frame:
        return pd.DataFrame()
    sel = frame[frame["sweep_protocol"].notna() & frame["error"].notna()]
    sel = sel[sel["corruption"] == "clean"] if what == "clean" else sel[
        sel["corruption"].isin(cnames.COMMON)]
    if sel.empty:
        return pd.DataFrame()
    keys = ["method", "sweep_protocol", "test_batch_size"]
    per_run = sel.groupby([*keys, "run_id"], sort=False)["error"].mean()
    table = per_run.groupby(level=keys, sort=False).mean().unstack("test_batch_size")
    table = table[sorted(table.columns)]
    table.columns = [f"batch {int(b)}" for b in table.columns]
    table.index = table.index.set_names(["method", "protocol"])
    return table.round(2)


def batch_size_plot(frame: pd.DataFrame) -> Figure | None:
    """Mean error over the common corruption cells against batch size (log axis), one line per
    (method, protocol); None without sweep rows."""
    table = batch_size_table(frame)
    if table.empty:
        return None
    sizes = [int(c.split()[-1]) for c in table.columns]
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    for i, ((method, protocol), values) in enumerate(table.iterrows()):
        y = values.to_numpy(dtype=float)
        ok = np.isfinite(y)
        ax.plot(np.array(sizes)[ok], y[ok], marker="osD^v<>ph*"[i % 10], label=f"{method}, {protocol}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("test batch size")
    ax.set_ylabel("error (%), mean over common corruption cells")
    ax.set_title("Error vs test batch size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_path(out_dir: Path) -> Path:
    """Where write_plots puts the figure."""
    return out_dir / "error_vs_batch_size.png"


def batch_size_view(frame: pd.DataFrame, what: str = "mce") -> pd.DataFrame:
    """batch_size_table as a table of strings (two decimals, '—' where a size is missing)."""
    table = batch_size_table(frame, what)
    if table.empty:
        return table
    return table.map(lambda v: "—" if pd.isna(v) else f"{v:.2f}").reset_index()
