"""Aggregation of per-cell rows into the numbers papers print.

Definitions (every table labels its numbers with these):
- error of a cell: top-1 error (%) on the N images of one (corruption, severity);
- CIFAR "mCE": the unnormalised mean error over the common corruptions x 5 severities (what
  AugMix, CrossNorm/SelfNorm and most CIFAR papers call mCE); the 4 extras never count;
- severity-k mean: the mean error over the common corruptions at severity k;
- normalised mCE (ImageNet-C style, Hendrycks & Dietterich 2019): per corruption, the error
  summed over severities divided by a reference run's, averaged over corruptions, x 100; the
  reference is a declared baseline (default: vanilla under protocol none, mean over its seeds),
  since CIFAR has no AlexNet row;
- relative mCE: the same with (error - clean error) in numerator and denominator;
- -C-bar mean error: the unnormalised mean error over the CIFAR-10-C-bar corruptions x 5
  severities, as Mintun, Kirillov & Xie (NeurIPS 2021) report it (their test script's
  'overall-avg'); its own number, never part of the -C mCE, and present only where the rows
  hold -C-bar cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from metabn_bench.corruptions import names as cnames

GROUP_KEYS = ("method", "protocol")
REFERENCE_PROTOCOL = "none"  # the normalised mCE's reference is a model evaluated as trained


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
        cbar = g[g["corruption"].isin(cnames.CBAR)]
        rec["cbar_error"] = float(cbar["error"].mean()) if len(cbar) else np.nan
        rec["cbar_corruptions"] = cnames.canonical_order(sorted(set(cbar["corruption"])))
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
    common = _common_cells(df)
    runs = with_normalized(run_metrics(common), common, reference_errors(common, baseline_method))
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
            rec[f"severity{sev}"], rec[f"severity{sev}_std"] = _mean_std(g[f"severity{sev}"])
        for key in ("mce_normalized", "relative_mce"):
            rec[key], rec[f"{key}_std"] = _mean_std(g[key])
        if g["cbar_error"].notna().any():  # -C-only summaries keep their fields as they were
            rec["cbar_error"], rec["cbar_error_std"] = _mean_std(g["cbar_error"])
            rec["cbar_corruptions"] = g["cbar_corruptions"].iloc[0]
        records.append(rec)
    base = {r["protocol"]: r for r in records if r["method"] == baseline_method}
    for rec in records:
        ref = base.get(rec["protocol"])
        rec["delta_mce_vs_" + baseline_method] = (rec["mce"] - ref["mce"]) if ref else None
        rec["delta_clean_error_vs_" + baseline_method] = (
            rec["clean_error"] - ref["clean_error"]) if ref else None
    return records


@dataclass
class Reference:
    """The reference of the normalised mCE: per-cell errors averaged over a baseline's seeds."""

    method: str
    protocol: str
    run_ids: list[str]
    clean: float
    errors: dict[tuple[str, int], float]  # (corruption, severity) -> error (%)

    def describe(self) -> dict[str, Any]:
        """The reference as recorded in summary.json."""
        return {"method": self.method, "protocol": self.protocol, "run_ids": self.run_ids}


def reference_errors(df: pd.DataFrame, method: str,
                     protocol: str = REFERENCE_PROTOCOL) -> Reference | None:
    """The baseline method's mean per-cell errors under `protocol` (None if it has none)."""
    sel = df[(df["method"] == method) & (df["protocol"] == protocol)]
    clean = sel[sel["corruption"] == "clean"]["error"]
    cells = sel[sel["corruption"].isin(cnames.COMMON)]
    if cells.empty or clean.empty:
        return None
    errors = cells.groupby(["corruption", "severity"])["error"].mean()
    return Reference(method, protocol, sorted(sel["run_id"].unique()), float(clean.mean()),
                     {(str(c), int(s)): float(v) for (c, s), v in errors.items()})


def normalized_errors(cells: pd.DataFrame, clean: float, ref: Reference) -> tuple[float, float]:
    """(normalised mCE, relative mCE) of one run's common cells against `ref`, in %.

    NaN when the reference leaves a ratio undefined: a corruption on which it never erred
    (normalised) or did not err more than on clean images (relative).
    """
    ratios, relative = [], []
    for corruption, g in cells.groupby("corruption", sort=False):
        pairs = [(float(e), ref.errors[(corruption, int(s))])
                 for s, e in zip(g["severity"], g["error"]) if (corruption, int(s)) in ref.errors]
        if not pairs:
            continue
        own = sum(e for e, _ in pairs)
        base = sum(b for _, b in pairs)
        base_rel = sum(b - ref.clean for _, b in pairs)
        ratios.append(own / base if base > 0 else np.nan)
        relative.append(sum(e - clean for e, _ in pairs) / base_rel if base_rel > 0 else np.nan)
    if not ratios:
        return np.nan, np.nan
    return 100.0 * float(np.mean(ratios)), 100.0 * float(np.mean(relative))


def with_normalized(runs: pd.DataFrame, df: pd.DataFrame, ref: Reference | None) -> pd.DataFrame:
    """`runs` (from run_metrics) with mce_normalized and relative_mce columns added."""
    runs = runs.copy()
    norm, rel = [], []
    for run_id, protocol, clean in zip(runs["run_id"], runs["protocol"], runs["clean_error"]):
        if ref is None or np.isnan(clean):
            norm.append(np.nan)
            rel.append(np.nan)
            continue
        sel = df[(df["run_id"] == run_id) & (df["protocol"] == protocol)
                 & df["corruption"].isin(cnames.COMMON)]
        n, r = normalized_errors(sel, clean, ref)
        norm.append(n)
        rel.append(r)
    runs["mce_normalized"] = norm
    runs["relative_mce"] = rel
    return runs


def normalization_reference(df: pd.DataFrame, baseline_method: str = "vanilla") -> Reference | None:
    """The reference that summary_rows normalises by (None when the baseline has no 'none' rows)."""
    return reference_errors(_common_cells(df), baseline_method) if not df.empty else None


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
    return corruption_stats(df, protocol)[0]


def corruption_stats(df: pd.DataFrame, protocol: str = "none",
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Method x corruption (one protocol): mean, std and number of seeds.

    Each run's error on a corruption is its mean over severities; mean and sample standard
    deviation are then taken over the method's runs (seeds).
    """
    sel = df[(df["protocol"] == protocol) & (df["corruption"] != "clean")]
    if sel.empty:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    per_run = sel.groupby(["method", "run_id", "corruption"], sort=False)["error"].mean().reset_index()
    grouped = per_run.groupby(["method", "corruption"], sort=False)["error"]
    order = _method_order(df)
    tables = []
    for stat in (grouped.mean(), grouped.std(ddof=1).fillna(0.0), grouped.count()):
        table = stat.unstack("corruption")
        tables.append(table.loc[[m for m in order if m in table.index],
                                cnames.canonical_order(list(table.columns))])
    return tables[0], tables[1], tables[2]


def severity_table(df: pd.DataFrame, protocol: str = "none") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Method x (clean, severity 1..5) for one protocol: mean and std over seeds.

    Severity columns average the common corruptions only (extras never count).
    """
    sel = df[(df["protocol"] == protocol)
             & (df["corruption"].isin(cnames.COMMON) | (df["corruption"] == "clean"))]
    if sel.empty:
        return pd.DataFrame(), pd.DataFrame()
    level = sel["severity"].where(sel["corruption"] != "clean", 0)
    per_run = sel.assign(level=level).groupby(["method", "run_id", "level"], sort=False)["error"].mean()
    grouped = per_run.reset_index().groupby(["method", "level"], sort=False)["error"]
    order = _method_order(df)
    out = []
    for stat in (grouped.mean(), grouped.std(ddof=1).fillna(0.0)):
        table = stat.unstack("level")
        table = table.loc[[m for m in order if m in table.index], sorted(table.columns)]
        table.columns = ["clean" if c == 0 else f"severity {c}" for c in table.columns]
        out.append(table)
    return out[0], out[1]


def _method_order(df: pd.DataFrame) -> list[str]:
    """Methods in order of first appearance (the order the suite trained them)."""
    return list(dict.fromkeys(df["method"]))
