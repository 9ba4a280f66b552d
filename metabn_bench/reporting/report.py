"""Reports from the long per-cell table: collection, the summary document, every view, output.

`build_report` turns per-cell rows (plus optional per-image vectors) into summary rows,
paired comparisons, missing-cell records and matching published numbers; `format_report`
renders it; `write_results` writes a results directory. Everything here returns strings or
data; the CLI prints and writes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from metabn_bench import fsio
from metabn_bench.data import per_image
from metabn_bench.errors import UserError
from metabn_bench.reporting import costs as train_costs
from metabn_bench.reporting import hierarchical, ledger, stats
from metabn_bench.reporting import not_applicable as na
from metabn_bench.reporting.document import Section, render_document, render_table
from metabn_bench.reporting.metrics import cells_frame, normalization_reference, summary_rows
from metabn_bench.reporting.missing import missing_cells, run_status
from metabn_bench.reporting.model import Report
from metabn_bench.reporting.published import METRICS, published_rows
from metabn_bench.reporting.sections import report_sections
from metabn_bench.reporting.views import fmt
from metabn_bench.runs import EVAL_FILE, is_applicable, read_eval_rows

FORMATS = ("markdown", "latex", "csv", "json", "html")
FORMATS_EXT = {"markdown": "md", "latex": "tex"}  # file extensions that differ from the name
SCHEMA = "metabn-bench summary v1"
RESULT_FILES = ("cells.csv", "summary.json", "report.md", per_image.RESULTS_FILE)

__all__ = ["FORMATS", "SCHEMA", "Collected", "build_report", "collect", "collect_rows", "fmt",
           "format_report", "render", "report_from_paths", "summary_table", "write_results"]


@dataclass
class Collected:
    """Rows, per-image vectors and runs without rows, gathered from the given paths."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    vectors: per_image.PerImage = field(default_factory=dict)
    confidences: per_image.PerImage = field(default_factory=dict)
    unfinished: list[dict[str, Any]] = field(default_factory=list)
    not_applicable: list[dict[str, Any]] = field(default_factory=list)  # n/a rows: no metric
    training: dict[str, train_costs.TrainingCost] = field(default_factory=dict)  # run id -> cost


def collect(paths: list[str | Path]) -> Collected:
    """Everything under run directories, results directories (cells.csv) or trees of runs."""
    out = Collected()
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"'{path}' does not exist (expected a run or results directory)")
        if (path.is_file() and path.suffix == ".csv") or (path / "cells.csv").is_file():
            csv = path if path.is_file() else path / "cells.csv"
            rows = _rows_from_csv(csv)
            out.rows += rows
            out.vectors.update(per_image.load_results(csv.parent, rows))
            out.confidences.update(per_image.load_results_confidences(csv.parent, rows))
            out.training.update(train_costs.from_results_dir(csv.parent))
            continue
        found = [path / EVAL_FILE] if (path / EVAL_FILE).is_file() else sorted(path.rglob(EVAL_FILE))
        out.unfinished += run_status([path])
        if not found and not out.unfinished:
            raise UserError(f"'{path}' holds no evaluation results ({EVAL_FILE} or cells.csv); "
                            "run metabn-bench evaluate first")
        for file in found:
            rows = read_eval_rows(file)
            out.not_applicable += [r for r in rows if not is_applicable(r)]
            rows = [r for r in rows if is_applicable(r)]  # no error: skipped by every metric
            out.rows += rows
            out.vectors.update(per_image.load_run(file.parent, rows))
            out.confidences.update(per_image.load_run_confidences(file.parent, rows))
            cost = train_costs.read_training_cost(file.parent)
            if cost is not None:
                out.training[file.parent.name] = cost
    return out


def collect_rows(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Per-cell rows from run directories, results directories (cells.csv) or trees of runs."""
    return collect(paths).rows


def _rows_from_csv(path: Path) -> list[dict[str, Any]]:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"'{path}' is not a readable cells.csv: {exc}") from None
    required = {"run_id", "method", "protocol", "corruption", "severity", "error", "seed"}
    missing = required - set(df.columns)
    if missing:
        raise UserError(f"'{path}' lacks columns {', '.join(sorted(missing))}")
    return df.to_dict("records")


def summary_table(rows: list[dict[str, Any]], baseline: str = "vanilla",
                  not_applicable: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """The headline table printed by `run` and `evaluate`: one line per (method, protocol);
    a protocol that does not apply to a method shows 'n/a [k]' (`na.footnotes` gives k's
    reason)."""
    lines = []
    for r in rows:
        delta = r.get(f"delta_mce_vs_{baseline}")
        lines.append({
            "method": r["method"], "protocol": r["protocol"], "seeds": r["n_seeds"],
            "clean error (%)": fmt(r["clean_error"], r["clean_error_std"] if r["n_seeds"] > 1 else None),
            "mCE (%)": fmt(r["mce"], r["mce_std"] if r["n_seeds"] > 1 else None),
            "severity-5 error (%)": fmt(r["severity5"]),
            f"Δ mCE vs {baseline}": "—" if delta is None else f"{delta:+.2f}",
            f"train cost (x {baseline})": train_costs.cost_text(r, baseline),
        })
    for e in not_applicable or []:
        mark = na.cell(e)
        lines.append({"method": e["method"], "protocol": e["protocol"], "seeds": e["runs"],
                      "clean error (%)": mark, "mCE (%)": mark, "severity-5 error (%)": mark,
                      f"Δ mCE vs {baseline}": mark})
    return pd.DataFrame(lines)


def render(df: pd.DataFrame, fmt_name: str) -> str:
    """A DataFrame as markdown, LaTeX (booktabs), HTML or CSV text."""
    return render_table(df, fmt_name)


def definitions(baseline: str, reference: dict[str, Any] | None) -> dict[str, str]:
    """What every number of summary.json and the report means."""
    ref = (f"{reference['method']} under protocol {reference['protocol']}, mean over its seeds"
           if reference else f"{baseline} under protocol none (absent here, so not computed)")
    b = baseline
    return {
        "clean_error": "top-1 error (%) on the clean test images",
        "mce": "CIFAR mCE: unnormalised mean error (%) over the listed common corruptions "
               "x severities (extras never included)",
        "severity5": "mean error (%) over the listed corruptions at severity 5",
        "mce_normalized": "ImageNet-C-style mCE: per corruption, the error summed over severities "
                          f"divided by the reference's ({ref}), averaged over corruptions, x 100",
        "relative_mce": "as mce_normalized with (error - clean error) in numerator and denominator",
        "cbar_error": "-C-bar mean error: unnormalised mean error (%) over the listed CIFAR-10-C-bar "
                      "corruptions x severities (Mintun et al. 2021; only where -C-bar cells "
                      "exist; never part of mce)",
        "std": "sample standard deviation over seeds (0 for one seed)",
        f"delta_mce_vs_{b}": f"mce minus the mce of {b} under the same protocol (points)",
        f"delta_clean_error_vs_{b}": f"clean_error minus that of {b} under the same protocol",
        f"delta_mce_vs_{b}_ci95": "95% paired-bootstrap interval of the delta over test images "
                                  "(see 'statistics'; null without per-image results)",
        f"delta_mce_vs_{b}_paired": "the paired delta that interval is about: over the seeds both "
                                    "rows have (differs from delta_mce_vs_* when their seeds differ)",
        f"delta_mce_vs_{b}_ci95_seeds": "95% two-stage bootstrap interval of the same paired "
                                        "delta: seeds, then test images (see "
                                        "'statistics.with_seeds'); includes seed variance",
        f"delta_clean_error_vs_{b}_ci95_seeds": "as delta_mce_vs_*_ci95_seeds, for clean error",
        f"delta_mce_vs_{b}_per_seed": "seed -> the paired mCE delta of that seed's two runs "
                                      "(null when seeds are not paired)",
        f"delta_clean_error_vs_{b}_per_seed": "as delta_mce_vs_*_per_seed, for clean error",
        f"win_tie_loss_vs_{b}": "common corruptions whose paired delta interval lies below 0 "
                                "(win), above 0 (loss) or contains 0 (tie)",
        f"train_cost_vs_{b}": "median over the method's seeds of its runs' recorded training "
                              f"time divided by {b}'s (train_cost_clock: CPU = process CPU "
                              "seconds, wall = wall seconds; see 'training'); null without "
                              "records",
        "reported": "published numbers (resources/published.yaml) shown only where data set, "
                    "architecture, protocol and test set match; never mixed with measured ones",
        "not_applicable": "(method, protocol) pairs where the protocol does not apply to the "
                          "model (no BatchNorm statistics to adapt), with the reason; no number",
    }


def summary_document(rows: list[dict[str, Any]], provenance: dict[str, Any],
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The public summary.json object: schema, definitions, provenance, rows, then additions."""
    extra = dict(extra or {})
    baseline = extra.get("baseline", {}).get("method", "vanilla")
    reference = extra.get("baseline", {}).get("normalization_reference")
    return {"schema": SCHEMA, "definitions": definitions(baseline, reference),
            "provenance": provenance, "rows": rows, **extra}


def _attach(rows: list[dict[str, Any]], comparisons: list[stats.Comparison], baseline: str) -> None:
    by_key = {(c.method, c.protocol): c for c in comparisons}
    for r in rows:
        comp = by_key.get((r["method"], r["protocol"]))
        ok = comp is not None and comp.reason is None
        r[f"delta_clean_error_vs_{baseline}_ci95"] = comp.clean.as_list() if ok and comp.clean else None
        r[f"delta_mce_vs_{baseline}_ci95"] = comp.mce.as_list() if ok and comp.mce else None
        r[f"delta_mce_vs_{baseline}_paired"] = comp.mce.estimate if ok and comp.mce else None
        r[f"win_tie_loss_vs_{baseline}"] = comp.win_tie_loss() if ok and comp.corruptions else None
        r[f"paired_seeds_vs_{baseline}"] = comp.seeds if ok and comp.seeds_paired else None
        r[f"delta_clean_error_vs_{baseline}_ci95_seeds"] = (
            comp.clean_seeds.as_list() if ok and comp.clean_seeds else None)
        r[f"delta_mce_vs_{baseline}_ci95_seeds"] = (
            comp.mce_seeds.as_list() if ok and comp.mce_seeds else None)
        # JSON keys are strings: seed -> delta, paired seeds only
        r[f"delta_mce_vs_{baseline}_per_seed"] = (
            {str(k): v for k, v in comp.per_seed.get("mce", {}).items()} or None) if ok else None
        r[f"delta_clean_error_vs_{baseline}_per_seed"] = (
            {str(k): v for k, v in comp.per_seed.get("clean", {}).items()} or None) if ok else None
        if comp is not None and comp.reason:
            r[f"comparison_note_vs_{baseline}"] = comp.reason


def build_report(cell_rows: list[dict[str, Any]], provenance: dict[str, Any],
                 baseline: str = "vanilla", vectors: per_image.PerImage | None = None,
                 unfinished: list[dict[str, Any]] | None = None,
                 resamples: int = stats.RESAMPLES,
                 confidences: per_image.PerImage | None = None,
                 not_applicable: list[dict[str, Any]] | None = None,
                 training: dict[str, train_costs.TrainingCost] | None = None) -> Report:
    """Everything a report needs: the long frame, summary rows, comparisons, the summary document.

    `not_applicable`: the rows `evaluate` marked not applicable; they enter no metric and are
    listed per (method, protocol) with the reason (tables show n/a with a footnote)."""
    df = cells_frame(cell_rows)
    if df.empty:
        raise UserError("no evaluation rows to report" + (
            f" ({len(unfinished)} run(s) unfinished or not evaluated)" if unfinished else ""))
    if "per_image" not in df:
        df["per_image"] = False
    if vectors and set(per_image.KEY_FIELDS) <= set(df.columns):
        keys = {per_image.row_key(r) for r in df[list(per_image.KEY_FIELDS)].to_dict("records")}
        vectors = {k: v for k, v in vectors.items() if k in keys}  # only the rows reported
    else:
        vectors = {}
    confidences = {k: v for k, v in (confidences or {}).items() if k in vectors}
    rows = summary_rows(df, baseline)
    reference = normalization_reference(df, baseline)
    comparisons = stats.paired_comparisons(df, vectors, baseline, resamples)
    hierarchical.add_seed_intervals(comparisons, resamples)
    _attach(rows, comparisons, baseline)
    run_costs = train_costs.attach_costs(rows, training or {}, baseline)
    missing = missing_cells(df)
    published = published_rows(df, rows)
    na_entries = na.summarise(not_applicable or [], {(r["method"], r["protocol"]) for r in rows})
    extra = {
        "baseline": {"method": baseline,
                     "normalization_reference": reference.describe() if reference else None},
        "statistics": stats.describe(resamples) | {
            "with_seeds": hierarchical.describe(resamples, stats.LEVEL, stats.SEED)},
        "missing": {"runs": list(unfinished or []), "cells": missing},
        "training": train_costs.costs_record(run_costs),
        "ledger": {**ledger.describe(), "claims": [
            c.as_dict() for c in ledger.reproduction_ledger(df, vectors, resamples)]},
        "reported": [{k: p[k] for k in ("method", "protocol", "metric", "reported", "reported_as",
                                        "citation", "notes")} | {"definition": METRICS[p["metric"]]}
                     for p in published],
        "not_applicable": [{k: e[k] for k in ("method", "protocol", "reason", "runs")}
                           for e in na_entries],
    }
    return Report(frame=df, rows=rows, summary=summary_document(rows, provenance, extra),
                  comparisons=comparisons, missing=missing, unfinished=list(unfinished or []),
                  published=published, baseline=baseline, vectors=vectors,
                  confidences=confidences, not_applicable=na_entries)


def report_from_paths(paths: list[str | Path], baseline: str = "vanilla",
                      plots_dir: str | Path | None = None, known_methods: tuple[str, ...] = ()) -> Report:
    """`metabn-bench report`: collect, build, and (optionally) write the plots into `plots_dir`."""
    from metabn_bench.reporting.provenance import provenance_of

    found = collect(paths)
    _check_baseline(baseline, found.rows, known_methods)
    report = build_report(found.rows, provenance_of([Path(p) for p in paths], found.rows), baseline,
                          found.vectors, found.unfinished, confidences=found.confidences,
                          not_applicable=found.not_applicable,
                          training=found.training)
    if plots_dir is not None:
        from metabn_bench.reporting.plots import write_plots

        report.images = write_plots(report, plots_dir)
    return report


def _check_baseline(baseline: str, rows: list[dict[str, Any]], known: tuple[str, ...]) -> None:
    """A baseline must be a method of the rows or one of `known` (the registered methods,
    passed in by the caller: reporting never imports the methods); absent, there are no deltas."""
    present = sorted({str(r.get("method")) for r in rows})
    if baseline not in present and baseline not in known:
        raise UserError(f"unknown baseline '{baseline}'; valid: a method of the results "
                        f"({', '.join(present) or 'none'}) or a registered method")


def format_report(report: Report, fmt_name: str, title: str = "metabn-bench report",
                  doc_dir: str | Path | None = None, command: str | None = None) -> str:
    """The report in one of FORMATS, as text; images are linked relative to `doc_dir` (the
    html page embeds them); `command`, the one that reproduces it, is shown by the page."""
    if fmt_name not in FORMATS:
        raise UserError(f"unknown format '{fmt_name}'; valid: {', '.join(FORMATS)}")
    if fmt_name == "json":
        return fsio.dumps(report.summary) + "\n"
    if fmt_name == "csv":
        return report.frame.to_csv(index=False)
    if fmt_name == "html":  # one self-contained page: plots embedded, nothing external
        from metabn_bench.reporting.html_page import html_page

        return html_page(report, title, command)
    return render_document(title, _sections(report, doc_dir), fmt_name)


def _sections(report: Report, doc_dir: str | Path | None) -> list[Section]:
    base = Path(doc_dir) if doc_dir is not None else Path.cwd()
    images = [(caption, Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix())
              for caption, path in report.images]
    return report_sections(report, images)


def markdown_report(report: Report, title: str, doc_dir: str | Path | None = None) -> str:
    """report.md: provenance, every view, missing cells, reported numbers, plots, definitions."""
    return format_report(report, "markdown", title, doc_dir)


def write_results(report: Report, out_dir: str | Path, title: str,
                  plots: bool = True) -> Path:
    """Write cells.csv, summary.json, per_image.npz, plots/ and report.md into `out_dir`.

    Each file is written atomically; report.md last, so its links point at finished plots.
    """
    out = Path(out_dir)
    fsio.ensure_dir(out)
    fsio.write_text(out / "cells.csv", report.frame.to_csv(index=False))
    fsio.write_json(out / "summary.json", report.summary)
    per_image.save_results(out, report.vectors, report.confidences)
    if plots:
        from metabn_bench.reporting.plots import write_plots

        report.images = write_plots(report, out / "plots")
    fsio.write_text(out / "report.md", markdown_report(report, title, out))
    return out
