"""Aggregation of per-cell rows into the numbers papers print.

Definitions (every table labels its numbers with these):
- error of a cell: top-1 error (%) on the N images of one (corruption, severity);
- CIFAR "mCE": the unnormalised mean error over the common corruptions x 5 severities (what
  AugMix, CrossNorm/SelfNorm and most CIFAR papers call mCE); the 4 extras never count;
- severity-k mean: the mean error over the common corruptions at severity k.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from metabn_bench.corruptions import names as cnames

GROUP_KEYS = ("method", "protocol")


def cells_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The long table: one row per (run, protocol, cell)."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # The same cell evaluated twice (e.g. re-run) counts once: keep the last row.
    keys = ["run_id", "set_id", "protocol", "test_batch_size", "corruption", "severity"]
    return df.drop_duplicates(subset=[k for k in keys if k in df], keep="last").reset_index(drop=True)


def run_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, protocol): clean error, mCE, severity means, corruptions included."""
    out = []
    for (run_id, protocol), g in df.groupby(["run_id", "protocol"], sort=False):
        common = g[g["corruption"].isin(cnames.COMMON)]
        clean = g[g["corruption"] == "clean"]["error"]
        rec: dict[str, Any] = {
            "run_id": run_id, "protocol": protocol, "method": g["method"].iloc[0],
            "seed": int(g["seed"].iloc[0]), "arch": g["arch"].iloc[0],
            "clean_error": float(clean.iloc[0]) if len(clean) else np.nan,
            "mce": float(common["error"].mean()) if len(common) else np.nan,
            "corruptions": cnames.canonical_order(sorted(set(common["corruption"]))),
        }
        for sev in cnames.SEVERITIES:
            sel = common[common["severity"] == sev]["error"]
            rec[f"severity{sev}"] = float(sel.mean()) if len(sel) else np.nan
        out.append(rec)
    return pd.DataFrame(out)


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summary_rows(df: pd.DataFrame, baseline_method: str = "vanilla") -> list[dict[str, Any]]:
    """One record per (method, protocol), averaged over seeds (the summary.json rows).

    Only the cells that every seed of a group has are averaged, so a missing cell in one seed
    cannot bias the group's mean; the included corruptions are listed.
    """
    if df.empty:
        return []
    runs = run_metrics(_common_cells(df))
    records: list[dict[str, Any]] = []
    for (method, protocol), g in runs.groupby(list(GROUP_KEYS), sort=False):
        clean_m, clean_s = _mean_std(g["clean_error"])
        mce_m, mce_s = _mean_std(g["mce"])
        s5_m, s5_s = _mean_std(g["severity5"])
        rec = {
            "method": method, "protocol": protocol, "arch": g["arch"].iloc[0],
            "n_seeds": len(g), "seeds": sorted(int(s) for s in g["seed"]),
            "clean_error": clean_m, "clean_error_std": clean_s,
            "mce": mce_m, "mce_std": mce_s,
            "severity5": s5_m, "severity5_std": s5_s,
            "corruptions": g["corruptions"].iloc[0],
            "run_ids": sorted(g["run_id"]),
        }
        for sev in cnames.SEVERITIES:
            rec[f"severity{sev}"] = _mean_std(g[f"severity{sev}"])[0]
        records.append(rec)
    base = {r["protocol"]: r for r in records if r["method"] == baseline_method}
    for rec in records:
        ref = base.get(rec["protocol"])
        rec["delta_mce_vs_" + baseline_method] = (rec["mce"] - ref["mce"]) if ref else None
    return records


def _common_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Keep, within each (method, protocol), only cells present in every run."""
    parts = []
    for _, g in df.groupby(list(GROUP_KEYS), sort=False):
        n_runs = g["run_id"].nunique()
        counts = g.groupby(["corruption", "severity"])["run_id"].nunique()
        keep = {k for k, v in counts.items() if v == n_runs}
        mask = [(c, s) in keep for c, s in zip(g["corruption"], g["severity"])]
        parts.append(g[mask])
    return pd.concat(parts, ignore_index=True)


def corruption_table(df: pd.DataFrame, protocol: str = "none") -> pd.DataFrame:
    """Method x corruption: error averaged over severities and seeds (one protocol)."""
    sel = df[(df["protocol"] == protocol) & (df["corruption"] != "clean")]
    if sel.empty:
        return pd.DataFrame()
    per_run = sel.groupby(["method", "run_id", "corruption"])["error"].mean().reset_index()
    table = per_run.groupby(["method", "corruption"])["error"].mean().unstack("corruption")
    return table[cnames.canonical_order(list(table.columns))]
