"""Every table of a report, each a view of the long per-cell table or of the summary rows.

Measured numbers are formatted "mean ± std" over seeds (std shown when there are 2 or more
seeds; the number of seeds is in its own column); published numbers appear only in the
"reported" table. Every section says what its numbers are.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from metabn_bench.corruptions import names as cnames
from metabn_bench.reporting import not_applicable as na
from metabn_bench.reporting.costs import cost_text
from metabn_bench.reporting.metrics import corruption_stats, severity_table
from metabn_bench.reporting.stats import Comparison


def fmt(value: Any, std: Any = None, digits: int = 2) -> str:
    """'12.34' or '12.34 ± 0.56'; '—' for a missing number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std:.{digits}f}"
    return text


def _ms(row: dict[str, Any], key: str, digits: int = 2) -> str:
    std = row.get(f"{key}_std") if row.get("n_seeds", 1) > 1 else None
    return fmt(row.get(key), std, digits)


def summary_view(rows: list[dict[str, Any]], reference: dict[str, Any] | None,
                 not_applicable: list[dict[str, Any]] | None = None,
                 baseline: str = "vanilla") -> pd.DataFrame:
    """Method x protocol: clean error, CIFAR mCE, severity-5 mean, normalised and relative mCE;
    a protocol that does not apply to a method: 'n/a [k]' in every column (footnote k);
    training cost relative to the baseline."""
    ref = f"{reference['method']} [{reference['protocol']}]" if reference else "baseline"
    cbar = any("cbar_error" in r for r in rows)
    metrics = ["clean error (%)", "mCE (%)", "severity-5 error (%)",
               f"normalised mCE (% of {ref})", f"relative mCE (% of {ref})"]
    # -C-bar: its own column (the paper's plain mean error), never folded into the mCE
    cbar_col = ["-C-bar mean error (%)"] if cbar else []
    lines = [{
        "method": r["method"], "protocol": r["protocol"], "n seeds": r["n_seeds"],
        **dict(zip(metrics, [_ms(r, "clean_error"), _ms(r, "mce"), _ms(r, "severity5"),
                             _ms(r, "mce_normalized", 1), _ms(r, "relative_mce", 1)])),
        **{c: _ms(r, "cbar_error") if "cbar_error" in r else "—" for c in cbar_col},
        f"train cost (x {baseline})": cost_text(r, baseline),
    } for r in rows]
    lines += [{"method": e["method"], "protocol": e["protocol"], "n seeds": e["runs"],
               **{m: na.cell(e) for m in metrics + cbar_col}} for e in not_applicable or []]
    return pd.DataFrame(lines)


def _ci(interval: Any) -> str:
    if interval is None:
        return "—"
    return f"{interval.estimate:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


def _per_seed(deltas: dict[int, float]) -> str:
    """'s0 +1.23, s1 +0.98' (paired seeds only)."""
    return ", ".join(f"s{k} {v:+.2f}" for k, v in sorted(deltas.items())) or "—"


def comparison_view(rows: list[dict[str, Any]], comparisons: list[Comparison],
                    baseline: str) -> pd.DataFrame:
    """Deltas against the baseline with paired-bootstrap intervals and win/tie/loss counts."""
    by_key = {(c.method, c.protocol): c for c in comparisons}
    lines = []
    for r in rows:
        comp = by_key.get((r["method"], r["protocol"]))
        if comp is None:
            continue
        d_clean, d_mce = r.get(f"delta_clean_error_vs_{baseline}"), r.get(f"delta_mce_vs_{baseline}")
        wtl = comp.win_tie_loss()
        seeds = ("—" if comp.reason else
                 ",".join(map(str, comp.seeds)) + ("" if comp.seeds_paired else " (unpaired)"))
        lines.append({
            "method": r["method"], "protocol": r["protocol"], "seeds used": seeds,
            "Δ clean error": "—" if d_clean is None else f"{d_clean:+.2f}",
            "Δ clean, paired [95% CI]": _ci(comp.clean),
            "Δ mCE": "—" if d_mce is None else f"{d_mce:+.2f}",
            "Δ mCE, paired [95% CI]": _ci(comp.mce),
            "Δ mCE [95% CI, seeds + images]": _ci(comp.mce_seeds),
            "Δ mCE per seed": _per_seed(comp.per_seed.get("mce", {})),
            "win/tie/loss": (f"{len(wtl['win'])}/{len(wtl['tie'])}/{len(wtl['loss'])}"
                             if comp.corruptions else "—"),
            "note": comp.reason or "",
        })
    return pd.DataFrame(lines)


def protocol_view(rows: list[dict[str, Any]], key: str = "mce",
                  not_applicable: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Method x test-time protocol for one summary field ('n/a [k]' where it does not apply)."""
    entries = not_applicable or []
    protocols = list(dict.fromkeys([*(r["protocol"] for r in rows), *(e["protocol"] for e in entries)]))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_key = {(r["method"], r["protocol"]): r for r in rows}
    na_key = {(e["method"], e["protocol"]): e for e in entries}
    lines = []
    for m in methods:
        line: dict[str, str] = {"method": m}
        for p in protocols:
            line[p] = (_ms(by_key[(m, p)], key) if (m, p) in by_key
                       else na.cell(na_key[(m, p)]) if (m, p) in na_key else "—")
        lines.append(line)
    return pd.DataFrame(lines)


def corruption_view(frame: pd.DataFrame, protocol: str, names: tuple[str, ...]) -> pd.DataFrame:
    """Method x corruption (mean over severities, then mean ± std over seeds), for `names`."""
    sel = frame[frame["corruption"].isin(("clean", *names))]
    mean, std, count = corruption_stats(sel, protocol)
    if mean.empty:
        return pd.DataFrame()
    out = pd.DataFrame({"method": mean.index, "n seeds": [int(count.loc[m].max()) for m in mean.index]})
    for c in mean.columns:
        out[c] = [fmt(mean.loc[m, c], std.loc[m, c] if count.loc[m, c] > 1 else None, 1)
                  for m in mean.index]
    return out


def severity_view(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Method x (clean, severity 1..5), mean ± std over seeds."""
    mean, std = severity_table(frame, protocol)
    if mean.empty:
        return pd.DataFrame()
    n = frame[frame["protocol"] == protocol].groupby("method")["run_id"].nunique()
    out = pd.DataFrame({"method": mean.index, "n seeds": [int(n[m]) for m in mean.index]})
    for c in mean.columns:
        out[c] = [fmt(mean.loc[m, c], std.loc[m, c] if n[m] > 1 else None, 1) for m in mean.index]
    return out


def delta_view(comparisons: list[Comparison], protocol: str) -> pd.DataFrame:
    """Method x corruption: paired delta against the baseline and its verdict (W/T/L)."""
    letters = {"win": "W", "tie": "T", "loss": "L"}
    lines = []
    for comp in comparisons:
        if comp.protocol != protocol or not comp.corruptions:
            continue
        line = {"method": comp.method}
        for name, iv in comp.corruptions.items():
            line[name] = f"{iv.estimate:+.1f} {letters[iv.verdict]}"
        lines.append(line)
    return pd.DataFrame(lines).fillna("—")


def published_view(published: list[dict[str, Any]]) -> pd.DataFrame:
    """Reported (published) numbers beside the measured number of the same metric."""
    return pd.DataFrame([{
        "method": p["method"], "protocol": p["protocol"], "metric": p["metric"],
        "reported (%)": f"{p['reported']:.2f}", "reported as": p["reported_as"],
        "source": p["source"],
        "measured here (%)": fmt(p["measured"], p["measured_std"] if (p["n_seeds"] or 0) > 1 else None),
        "note": p["notes"],
    } for p in published])


def missing_view(missing: list[dict[str, Any]], unfinished: list[dict[str, Any]]) -> pd.DataFrame:
    """Runs and cells that are not in the tables, with the reason."""
    lines = [{"run": u["run_dir"], "method": u["method"], "seed": str(u["seed"]), "protocol": "—",
              "missing": "every cell", "reason": u["reason"]} for u in unfinished]
    lines += [{"run": m["run_id"], "method": m["method"], "seed": str(m["seed"]),
               "protocol": m["protocol"], "missing": m["missing"], "reason": m["reason"]}
              for m in missing]
    return pd.DataFrame(lines)


def provenance_bullets(prov: dict[str, Any], frame: pd.DataFrame) -> list[str]:
    """Where the numbers come from: data, presets, seeds, sets, protocols, versions, device."""
    versions = prov.get("versions", {})
    vtext = ", ".join(f"{k} {versions[k]}" for k in ("metabn_bench", "torch", "torchvision", "numpy")
                      if k in versions)
    device = prov.get("device", {})
    dtext = f"{device.get('type', '?')} ({device.get('name', '?')}, {device.get('threads', '?')} threads)"
    sets = sorted({f"{s} (size preset {p})" for s, p in zip(frame.get("set_id", []),
                                                            frame.get("size_preset", []))})
    protocols = sorted({f"{p}, batch {b}" for p, b in zip(frame["protocol"], frame["test_batch_size"])}
                       ) if "test_batch_size" in frame else sorted(set(frame["protocol"]))
    arch = prov.get("arch") or ", ".join(sorted(set(map(str, frame.get("arch", []))))) or "—"
    seeds = prov.get("seeds") or sorted({int(s) for s in frame.get("seed", [])})
    return [
        f"Data: {prov.get('data_source', 'unknown')}",
        f"Preset: {prov.get('preset', 'none (assembled from run directories)')}; "
        f"architecture {arch}; seeds {seeds}",
        f"Corrupted set: {prov.get('corrupted_set', '—')}; set ids {', '.join(sets) or '—'}",
        f"Test-time protocols: {'; '.join(protocols)}; every protocol is reset before each cell",
        f"Versions: {vtext or 'unknown'}; commit {prov.get('commit', 'unknown')}",
        f"Device: {dtext}; generated {prov.get('time', prov.get('report_generated', '—'))}",
    ]


def warnings(rows: list[dict[str, Any]], frame: pd.DataFrame) -> list[str]:
    """Caveats a reader must see before the numbers."""
    out = []
    lists = {tuple(r["corruptions"]) for r in rows if r.get("corruptions")}
    if len(lists) > 1:
        out.append("Rows average different sets of corruptions (see `corruptions` in summary.json); "
                   "their mCEs are not comparable with each other.")
    n_corr = max((len(c) for c in lists), default=0)
    if 0 < n_corr < len(cnames.COMMON):
        names = ", ".join(next(iter(lists))) if len(lists) == 1 else f"{n_corr} corruptions"
        out.append(f"mCE here averages {n_corr} of the {len(cnames.COMMON)} common corruptions "
                   f"({names}); it is not comparable with a full 15-corruption mCE.")
    if "set_id" in frame and frame["set_id"].nunique() > 1:
        out.append("These results come from more than one corrupted set; rows of different sets "
                   "are averaged together and paired statistics are not computed.")
    if {"run_id", "protocol", "test_batch_size"} <= set(frame.columns):
        sizes = frame.groupby(["run_id", "protocol"])["test_batch_size"].nunique()
        mixed = sorted({p for (_, p), n in sizes.items() if n > 1})
        if mixed:  # evaluated twice with different --batch-size: one label, two settings
            out.append(f"Protocol {', '.join(mixed)} was evaluated at more than one test batch size "
                       "under the same label; its numbers average them (use --batch-sizes, "
                       "which labels each size).")
    return out


def ledger_view(claims: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per published claim: the verdict, the measured deltas with their two-stage
    intervals, and the published numbers."""
    lines = []
    for c in claims:
        parts = []
        for m in c["measured"]:
            if m["delta_mce"] is None:
                parts.append(f"{m['delta']}: {m['note'] or 'not measured'}")
            else:
                low, high = m["ci95_seeds"]
                seeds = ",".join(map(str, m["seeds"]))
                parts.append(f"{m['delta']}: {m['delta_mce']:+.2f} [{low:+.2f}, {high:+.2f}] "
                             f"(seeds {seeds})")
        lines.append({"claim": c["claim"], "verdict": c["verdict"],
                      "measured Δ mCE [95% CI, seeds + images]": "; ".join(parts),
                      "published": c["published"] or "—", "source": c["source"]})
    return pd.DataFrame(lines)
