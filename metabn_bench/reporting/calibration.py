"""Calibration views of a report: mean ECE / NLL / Brier per method and protocol, reliability diagrams.

Both read what evaluation wrote and nothing else: the `ece`, `nll` and `brier` fields of the rows
(absent in rows written before calibration, which are then left out) and the per-image
confidences stored beside per-image correctness (data/per_image.py). The ECE of pooled images and
the reliability bins use the shared formula of data/calibration.py (Guo et al., ICML 2017: 15
equal-width bins), the one evaluation's per-cell ECE uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from metabn_bench.corruptions import names as cnames
from metabn_bench.data import calibration
from metabn_bench.reporting.model import Report
from metabn_bench.reporting.views import fmt

FIELDS = ("ece", "nll", "brier")


def calibration_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Method x protocol: clean ECE, and ECE / NLL / Brier averaged over the common corruption
    cells (15 x 5 for a full set) of each run, then mean ± std over seeds."""
    if frame.empty or not set(FIELDS) <= set(frame.columns):
        return pd.DataFrame()
    df = frame.dropna(subset=list(FIELDS))
    lines = []
    for (method, protocol), g in df.groupby(["method", "protocol"], sort=False):
        per_run = []
        for _, r in g.groupby("run_id", sort=False):
            common = r[r["corruption"].isin(cnames.COMMON)]
            clean = r[r["corruption"] == "clean"]
            per_run.append({"clean": float(clean["ece"].mean()) if len(clean) else np.nan,
                            "cells": len(common),
                            **{f: float(common[f].mean()) if len(common) else np.nan for f in FIELDS}})
        runs = pd.DataFrame(per_run)
        n = len(runs)
        line = {"method": method, "protocol": protocol, "n seeds": n,
                "cells per seed": int(runs["cells"].max())}

        def cell(key: str, digits: int, frame: pd.DataFrame = runs, n: int = n) -> str:
            return fmt(frame[key].mean(), frame[key].std(ddof=1) if n > 1 else None, digits)

        line |= {"clean ECE (%)": cell("clean", 2), "mean ECE (%)": cell("ece", 2),
                 "mean NLL": cell("nll", 3), "mean Brier": cell("brier", 3)}
        lines.append(line)
    return pd.DataFrame(lines)


def pooled_reliability(report: Report, method: str, protocol: str, severity: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """Reliability bins and ECE of every stored image of `method` under `protocol` at `severity`
    (0 = clean; otherwise the common corruptions), pooled over cells and seeds."""
    frame = report.frame
    sel = frame[(frame["method"] == method) & (frame["protocol"] == protocol)
                & (frame["severity"] == severity)]
    sel = sel[sel["corruption"] == "clean"] if severity == 0 else sel[sel["corruption"].isin(cnames.COMMON)]
    conf, hit = [], []
    for row in sel.to_dict("records"):
        key = (str(row["run_id"]), str(row["set_id"]), str(row["protocol"]),
               int(row["test_batch_size"]), str(row["corruption"]), int(row["severity"]))
        if key in report.confidences and key in report.vectors:
            conf.append(report.confidences[key])
            hit.append(report.vectors[key])
    if not conf:
        return None
    c, h = np.concatenate(conf), np.concatenate(hit)
    count, mean_conf, acc = calibration.reliability(c, h)
    return count, mean_conf, acc, calibration.expected_calibration_error(c, h)


def reliability_diagram(report: Report, protocol: str) -> Figure | None:
    """Clean vs severity 5: accuracy against mean confidence per bin, one line per method
    (the diagonal is perfect calibration). None when no confidences were stored."""
    methods = list(dict.fromkeys(report.frame.loc[report.frame["protocol"] == protocol, "method"]))
    panels = [(0, "clean"), (5, "severity 5 (common corruptions)")]
    curves = {(m, s): pooled_reliability(report, m, protocol, s) for m in methods for s, _ in panels}
    if all(v is None for v in curves.values()):
        return None
    fig = Figure(figsize=(9.0, 4.3))
    for i, (severity, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
        for m in methods:
            got = curves[(m, severity)]
            if got is None:
                continue
            count, mean_conf, acc, ece = got
            used = count > 0
            ax.plot(mean_conf[used], acc[used], marker="o", markersize=3,
                    label=f"{m} (ECE {100 * ece:.1f}%)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (mean per bin, 15 bins)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}, protocol {protocol}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
