"""Tables from the long per-cell table: summary (with mCE), method x corruption, provenance.

Everything here returns strings or data; the CLI prints and writes them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from metabn_bench import fsio
from metabn_bench.corruptions import names as cnames
from metabn_bench.errors import UserError
from metabn_bench.evaluate import EVAL_FILE
from metabn_bench.metrics import cells_frame, corruption_table, summary_rows

FORMATS = ("markdown", "latex", "csv", "json", "html")
SCHEMA = "metabn-bench summary v1"
_TABLEFMT = {"markdown": "github", "latex": "latex_booktabs", "html": "html"}


def collect_rows(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Per-cell rows from run directories, results directories (cells.csv) or trees of runs."""
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"'{path}' does not exist (expected a run or results directory)")
        if (path.is_file() and path.suffix == ".csv") or (path / "cells.csv").is_file():
            csv = path if path.is_file() else path / "cells.csv"
            rows += _rows_from_csv(csv)
            continue
        found = [path / EVAL_FILE] if (path / EVAL_FILE).is_file() else sorted(path.rglob(EVAL_FILE))
        if not found:
            raise UserError(f"'{path}' holds no evaluation results ({EVAL_FILE} or cells.csv); "
                            "run metabn-bench evaluate first")
        for file in found:
            rows += fsio.read_jsonl(file)
    return rows


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


def fmt(value: Any, std: Any = None, digits: int = 2) -> str:
    """'12.34' or '12.34 ± 0.56'; '—' for a missing number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std:.{digits}f}"
    return text


def summary_table(rows: list[dict[str, Any]], baseline: str = "vanilla") -> pd.DataFrame:
    """The headline table: one line per (method, protocol)."""
    lines = []
    for r in rows:
        delta = r.get(f"delta_mce_vs_{baseline}")
        lines.append({
            "method": r["method"], "protocol": r["protocol"], "seeds": r["n_seeds"],
            "clean error (%)": fmt(r["clean_error"], r["clean_error_std"] if r["n_seeds"] > 1 else None),
            "mCE (%)": fmt(r["mce"], r["mce_std"] if r["n_seeds"] > 1 else None),
            "severity-5 error (%)": fmt(r["severity5"]),
            f"Δ mCE vs {baseline}": "—" if delta is None else f"{delta:+.2f}",
        })
    return pd.DataFrame(lines)


def render(df: pd.DataFrame, fmt_name: str) -> str:
    """A DataFrame as markdown, LaTeX (booktabs), HTML or CSV text."""
    if fmt_name == "csv":
        return df.to_csv(index=False)
    return tabulate(df, headers="keys", tablefmt=_TABLEFMT[fmt_name], showindex=False,
                    disable_numparse=True)


def summary_document(rows: list[dict[str, Any]], provenance: dict[str, Any]) -> dict[str, Any]:
    """The public summary.json object: schema, provenance, definitions and rows."""
    return {
        "schema": SCHEMA,
        "definitions": {
            "clean_error": "top-1 error (%) on the clean test images",
            "mce": "CIFAR mCE: unnormalised mean error (%) over the listed common corruptions "
                   "x severities (extras never included)",
            "severity5": "mean error (%) over the listed corruptions at severity 5",
            "std": "sample standard deviation over seeds (0 for one seed)",
        },
        "provenance": provenance,
        "rows": rows,
    }


def build_report(cell_rows: list[dict[str, Any]], provenance: dict[str, Any],
                 baseline: str = "vanilla") -> dict[str, Any]:
    """Everything a report needs: the long frame, summary rows and the summary document."""
    df = cells_frame(cell_rows)
    if df.empty:
        raise UserError("no evaluation rows to report")
    rows = summary_rows(df, baseline)
    return {"frame": df, "rows": rows, "summary": summary_document(rows, provenance)}


def markdown_report(report: dict[str, Any], title: str, baseline: str = "vanilla") -> str:
    """report.md: provenance, the summary table, method x corruption, definitions."""
    prov = report["summary"]["provenance"]
    rows = report["rows"]
    n_corr = len(rows[0]["corruptions"]) if rows else 0
    parts = [f"# {title}", ""]
    parts += [f"- **Data**: {prov.get('data_source', 'unknown')}",
              f"- **Preset**: {prov.get('preset', '—')}; seeds {prov.get('seeds', '—')}; "
              f"architecture {prov.get('arch', '—')}",
              f"- **Corrupted set**: {prov.get('corrupted_set', '—')}",
              f"- **Versions**: {_versions(prov)}; commit {prov.get('commit', 'unknown')}; "
              f"device {prov.get('device', {}).get('name', '?')}",
              ""]
    if 0 < n_corr < len(cnames.COMMON):
        parts += [f"> mCE here averages {n_corr} of the {len(cnames.COMMON)} common corruptions "
                  f"({', '.join(rows[0]['corruptions'])}); it is not comparable with a full "
                  "15-corruption mCE.", ""]
    parts += ["## Summary", "", render(summary_table(rows, baseline), "markdown"), ""]
    table = corruption_table(report["frame"], "none")
    if not table.empty:
        shown = table.map(lambda v: fmt(v, digits=1)).reset_index()
        parts += ["## Error per corruption (%, mean over severities and seeds, protocol none)",
                  "", render(shown, "markdown"), ""]
    parts += ["## Definitions", ""]
    parts += [f"- `{k}`: {v}" for k, v in report["summary"]["definitions"].items()]
    return "\n".join(parts) + "\n"


def _versions(prov: dict[str, Any]) -> str:
    v = prov.get("versions", {})
    return ", ".join(f"{k} {v[k]}" for k in ("metabn_bench", "torch", "torchvision") if k in v)


def write_results(report: dict[str, Any], out_dir: str | Path, title: str) -> Path:
    """Write cells.csv, summary.json and report.md (each atomically) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fsio.write_text(out / "cells.csv", report["frame"].to_csv(index=False))
    fsio.write_json(out / "summary.json", report["summary"])
    fsio.write_text(out / "report.md", markdown_report(report, title))
    return out


def format_report(report: dict[str, Any], fmt_name: str, title: str = "metabn-bench report") -> str:
    """The report in one of FORMATS, as text."""
    if fmt_name not in FORMATS:
        raise UserError(f"unknown format '{fmt_name}'; valid: {', '.join(FORMATS)}")
    if fmt_name == "json":
        return fsio.dumps(report["summary"]) + "\n"
    if fmt_name == "markdown":
        return markdown_report(report, title)
    if fmt_name == "csv":
        return report["frame"].to_csv(index=False)
    return render(summary_table(report["rows"]), fmt_name) + "\n"
