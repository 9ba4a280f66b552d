"""The Meta-BN ablation table: per variant and protocol, clean error, mCE and Δ mCE against
`metabn`, `augmix` and `vanilla`, with intervals that include seed variance.

Rows are the variants (`ablation_runs.py`: seeds of a variant grouped) under each protocol
(none, bn, tent) they were evaluated with, plus the evaluation-only controls evaluated on a
variant's runs (`--adapt none:control=zero-z`, `shuffle-z`, `static`; models/metabn_control.py)
as rows of their own ("metabn, z=0 at test"), read from the same runs' rows. A delta is
row minus reference under the same protocol (a control row: against its uncontrolled
reference), over the cells both share: the mean of per-image differences, in points. Its
interval is the two-stage bootstrap of `reporting/hierarchical.py` (seeds with replacement,
paired by seed value where both have the seed, then test images); with one seed on either
side there is no seed-level interval and the table says so. Per-seed deltas are listed for
paired seeds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metabn_bench.analysis.ablation_runs import AblationRun
from metabn_bench.data.per_image import PerImage
from metabn_bench.errors import UserError
from metabn_bench.reporting import hierarchical
from metabn_bench.reporting.metrics import cells_frame, run_metrics
from metabn_bench.reporting.stats import LEVEL, RESAMPLES, SEED, Runs, pair_seeds, scopes

REFERENCES = ("metabn", "augmix", "vanilla")
ORDER = ("vanilla", "augmix", "metabn", "augmix_metabn")  # the main rows first
CONTROL_LABELS = {"zero-z": "z=0 at test", "shuffle-z": "z shuffled at test",
                  "static": "static corrections at test"}
ONE_SEED = "one seed: no seed-level interval"


@dataclass
class Delta:
    """Row minus reference (points) over their shared cells, with its two-stage interval."""

    estimate: float | None = None
    ci: list[float] | None = None
    per_seed: dict[int, float] = field(default_factory=dict)
    seeds_paired: bool = False
    note: str = ""


@dataclass
class Row:
    """One row of the table: a variant (or a control on it) under one protocol."""

    label: str
    variant: str
    protocol: str  # the base protocol: none, bn, tent
    spec: str  # the protocol as evaluated, options included (none:control=zero-z)
    control: str
    seeds: list[int]
    clean: dict[int, float]  # seed -> clean error
    mce: dict[int, float]  # seed -> mCE
    deltas: dict[str, Delta] = field(default_factory=dict)  # reference -> delta of the mCE


def control_of(row: dict[str, Any]) -> str:
    """The Meta-BN evaluation control of a result row ('none' for none)."""
    info = row.get("metabn")
    return str(info.get("control", "none")) if isinstance(info, dict) else "none"


def select_cells(runs: list[AblationRun], set_id: str | None,
                 test_batch_size: int) -> pd.DataFrame:
    """The long frame of every run's rows on one corrupted set, one test batch size per spec
    (given, or the one with most rows: a batch-size sweep adds rows of other sizes)."""
    df = cells_frame([r for run in runs for r in run.rows])
    if df.empty:
        raise UserError("the runs hold no evaluation rows")
    sets = sorted(set(df["set_id"]))
    if set_id is None and len(sets) > 1:
        raise UserError(f"the runs were evaluated on several corrupted sets ({', '.join(sets)});"
                        " name one with --corrupted")
    set_id = set_id or sets[0]
    df = df[df["set_id"] == set_id]
    if df.empty:
        raise UserError(f"no run was evaluated on corrupted set {set_id}; valid: {', '.join(sets)}")
    keep = []
    for _, g in df.groupby("protocol", sort=False):
        size = test_batch_size or Counter(g["test_batch_size"]).most_common(1)[0][0]
        keep.append(g[g["test_batch_size"] == size])
    return pd.concat(keep).reset_index(drop=True)


def _label(variant: str, spec: str, control: str) -> str:
    if control != "none":
        return f"{variant}, {CONTROL_LABELS.get(control, control)}"
    base = spec.partition(":")[0]
    return variant if spec == base else f"{variant} [{spec}]"


def _spec_order(spec: str) -> tuple[bool, str, int, str]:
    """none first; each protocol, then its controls in CONTROL_LABELS' order, then the rest."""
    base = spec.partition(":")[0]
    control = spec.partition("control=")[2].partition(",")[0]
    rank = 0 if spec == base else 1 + list(CONTROL_LABELS).index(control) \
        if control in CONTROL_LABELS else len(CONTROL_LABELS) + 1
    return base != "none", base, rank, spec


def _order(variants: list[str]) -> list[str]:
    return [v for v in ORDER if v in variants] + sorted(v for v in variants if v not in ORDER)


def delta(row: Runs, ref: Runs, resamples: int, level: float, seed: int) -> Delta:
    """The mCE delta row - ref over their shared cells (see the module docstring)."""
    seeds_m, seeds_b, paired = pair_seeds(row, ref)
    cells = row.shared_cells(seeds_m) & ref.shared_cells(seeds_b)
    mce_cells = scopes(cells).get("mce")
    if not mce_cells:
        return Delta(note="no shared corrupted cell with per-image results")
    cols = hierarchical.SeedColumns(100.0 * row.per_run_error(seeds_m, mce_cells),
                                    100.0 * ref.per_run_error(seeds_b, mce_cells), paired,
                                    seeds_m if paired else [])
    out = Delta(cols.estimate(), None, cols.per_seed_deltas(), paired)
    if min(cols.method.shape[1], cols.base.shape[1]) < 2:
        out.note = ONE_SEED
    else:
        found = hierarchical.two_stage_interval(cols, resamples, level, seed)
        out.ci = found.as_list()
    return out


def table_rows(df: pd.DataFrame, vectors: PerImage, resamples: int = RESAMPLES,
               level: float = LEVEL, seed: int = SEED) -> list[Row]:
    """Every (variant or control, protocol) row with its metrics and deltas."""
    df = df.assign(control=[control_of(r) for r in df.to_dict("records")])
    metrics = run_metrics(df).set_index(["run_id", "protocol"])
    groups = {key: g for key, g in df.groupby(["method", "protocol"], sort=False)}
    rows: list[Row] = []
    for variant in _order(sorted({m for m, _ in groups})):
        specs = sorted((s for m, s in groups if m == variant), key=_spec_order)
        for spec in specs:
            g = groups[(variant, spec)]
            base = spec.partition(":")[0]
            by_seed = {int(s): str(r) for r, s in g.groupby("run_id")["seed"].first().items()}
            control = str(g["control"].iloc[0])
            row = Row(_label(variant, spec, control), variant, base, spec, control,
                      sorted(by_seed),
                      {s: float(metrics.loc[(r, spec), "clean_error"]) for s, r in by_seed.items()},
                      {s: float(metrics.loc[(r, spec), "mce"]) for s, r in by_seed.items()})
            runs = Runs(g, vectors)
            for ref in REFERENCES:
                if ref == variant and spec == base:
                    continue
                if (ref, base) not in groups:
                    row.deltas[ref] = Delta(note=f"no {ref} run under {base}")
                    continue
                row.deltas[ref] = delta(runs, Runs(groups[(ref, base)], vectors),
                                        resamples, level, seed)
            rows.append(row)
    return rows


def mean_std(values: dict[int, float]) -> tuple[float, float]:
    """Mean and sample std (0 for one seed) over seeds."""
    v = np.array(list(values.values()), dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _fmt_delta(d: Delta | None) -> str:
    if d is None:
        return "—"
    if d.estimate is None:
        return f"n/a ({d.note})"
    text = f"{d.estimate:+.2f}"
    text += f" [{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]" if d.ci else f" ({d.note})"
    if d.per_seed:
        text += "; " + ", ".join(f"s{s} {v:+.2f}" for s, v in sorted(d.per_seed.items()))
    return text


def markdown_tables(rows: list[Row], level: float = LEVEL) -> str:
    """One markdown table per protocol: seeds, clean error, mCE (mean ± std over seeds) and
    the Δ mCE against each reference, with its interval and per-seed deltas."""
    from tabulate import tabulate

    pct = f"{100 * level:g}%"
    head = ["row", "seeds", "clean error", "mCE"] + [
        f"Δ mCE vs {ref} [{pct} CI, seeds and images]; per seed" for ref in REFERENCES]
    out = []
    for protocol in sorted({r.protocol for r in rows}, key=lambda p: (p != "none", p)):
        lines = []
        for r in (r for r in rows if r.protocol == protocol):
            clean, mce = mean_std(r.clean), mean_std(r.mce)
            lines.append([r.label, ",".join(map(str, r.seeds)), f"{clean[0]:.2f} ± {clean[1]:.2f}",
                          f"{mce[0]:.2f} ± {mce[1]:.2f}"]
                         + [_fmt_delta(r.deltas.get(ref)) for ref in REFERENCES])
        out.append(f"### Protocol `{protocol}`\n\n" + tabulate(lines, head, tablefmt="github"))
    return "\n\n".join(out) + "\n"


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    """The rows as JSON-ready records (the means and stds next to the per-seed values)."""
    out = []
    for r in rows:
        clean, mce = mean_std(r.clean), mean_std(r.mce)
        out.append({
            "row": r.label, "variant": r.variant, "protocol": r.protocol, "spec": r.spec,
            "control": r.control, "seeds": r.seeds,
            "clean_error": {"mean": clean[0], "std": clean[1],
                            "per_seed": {str(s): v for s, v in r.clean.items()}},
            "mce": {"mean": mce[0], "std": mce[1],
                    "per_seed": {str(s): v for s, v in r.mce.items()}},
            "delta_mce": {ref: {"estimate": d.estimate, "ci": d.ci, "seeds_paired": d.seeds_paired,
                                "per_seed": {str(s): v for s, v in d.per_seed.items()},
                                "note": d.note} for ref, d in r.deltas.items()},
        })
    return out
