"""The Meta-BN ablation: runs of several variants (and the suite's main rows) in one table.

Input: run directories or run records (`<method>-s<seed>-<hash>` from a suite,
`<variant>-s<seed>` from `analysis control`), or folders of them (`run_records/`). Seeds of
a variant are grouped and variants kept apart (`ablation_runs.py`); every row must share one
recipe. Output in `out`:
- table.md and table.json (with provenance): per variant and protocol, clean error, mCE and
  Δ mCE against metabn, augmix and vanilla with two-stage (seeds, then images) intervals and
  per-seed deltas; the evaluation-only controls on a variant's runs are rows of their own
  (`ablation_table.py`);
- cells.csv, summary.json and report.md: the generic report over the same rows (every view,
  per corruption), rows named by variant;
- optionally the test-time contribution of the auxiliary nets (errors with corrections on and
  off, from `metabn-bench analysis diagnostics --json` files).

    metabn-bench analysis ablation PATH... --out DIR [--corrupted DIR] [--title T]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tabulate import tabulate

from metabn_bench import fsio, provenance
from metabn_bench.analysis import ablation_table
from metabn_bench.analysis.ablation_runs import AblationRun, load_runs, options, recipe
from metabn_bench.data import per_image
from metabn_bench.data.store import open_set
from metabn_bench.reporting import hierarchical
from metabn_bench.reporting.report import build_report, markdown_report
from metabn_bench.reporting.stats import LEVEL, RESAMPLES, SEED
from metabn_bench.runs import ENV

TABLE_SCHEMA = "metabn-bench ablation table v1"


def _commit(run: AblationRun) -> str:
    try:
        return str(json.loads((run.path / ENV).read_text()).get("commit", "?"))
    except (OSError, ValueError):
        return "?"


def variants(runs: list[AblationRun]) -> dict[str, dict[str, Any]]:
    """Per variant: its method, the hparams that differ from the method's defaults, its runs."""
    out: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: (r.variant, r.seed)):
        entry = out.setdefault(run.variant, {"method": run.config.method,
                                             "options": options(run.config), "runs": {}})
        entry["runs"][str(run.seed)] = {"run": run.name, "path": str(run.path),
                                        "commit": _commit(run)}
    return out


def diagnostics_table(paths: list[Path]) -> str:
    """Markdown: error with corrections on / off per cell, from `analysis diagnostics --json` files."""
    lines = []
    for path in paths:
        diag = json.loads(path.read_text())
        errors = diag["errors"]
        corrupted = [c for c in errors if c != "clean"]
        mean = {k: sum(errors[c][k] for c in corrupted) / max(len(corrupted), 1)
                for k in ("corrections_on", "corrections_off")}
        lines.append([f"{Path(diag['run']).name}", diag["severity"], diag["n"],
                      f"{errors['clean']['corrections_on']:.1f}",
                      f"{errors['clean']['corrections_off']:.1f}",
                      f"{mean['corrections_on']:.1f}", f"{mean['corrections_off']:.1f}"])
    return tabulate(lines, ["run", "severity", "images", "clean, on", "clean, off",
                            "corruptions mean, on", "corruptions mean, off"], tablefmt="github")


def _provenance(runs: list[AblationRun], cells: Any, notes: dict[str, Any]) -> dict[str, Any]:
    sizes = {spec: int(g["test_batch_size"].iloc[0]) for spec, g in cells.groupby("protocol")}
    return {**provenance.environment("cpu"),
            "data_source": sorted(set(cells["data_source"])) if "data_source" in cells else [],
            "corrupted_set": str(cells["set_id"].iloc[0]),
            "images_per_cell": sorted({int(n) for n in cells["n"]}),
            "test_batch_size": sizes, "recipe": recipe(runs[0].config),
            "variants": variants(runs), **notes}


def write_ablation(paths: list[Path], out: Path, title: str, notes: dict[str, Any],
                   diagnostics: list[Path], corrupted: Path | None = None,
                   test_batch_size: int = 0) -> Path:
    """table.md, table.json, cells.csv, summary.json and report.md of the ablation in `out`."""
    runs = load_runs(paths)
    set_id = open_set(corrupted, verify=False).set_id if corrupted is not None else None
    cells = ablation_table.select_cells(runs, set_id, test_batch_size)
    vectors: per_image.PerImage = {k: v for run in runs for k, v in run.vectors.items()}
    rows = ablation_table.table_rows(cells, vectors)
    prov = _provenance(runs, cells, notes)
    out.mkdir(parents=True, exist_ok=True)
    fsio.write_json(out / "table.json", {
        "schema": TABLE_SCHEMA, "title": title, "provenance": prov,
        "statistics": hierarchical.describe(RESAMPLES, LEVEL, SEED),
        "mce": "unnormalised mean top-1 error (%) over the 15 common corruptions x 5 severities",
        "rows": ablation_table.rows_json(rows)})
    option_lines = [[name, v["method"], ", ".join(f"{k}={o}" for k, o in v["options"].items())
                     or "(defaults)", ", ".join(sorted(v["runs"], key=int))]
                    for name, v in prov["variants"].items()]
    text = (f"# {title}\n\nData: {'; '.join(prov['data_source'])}. Corrupted set "
            f"{prov['corrupted_set']}, {'/'.join(map(str, prov['images_per_cell']))} images per "
            f"cell; test batch sizes {prov['test_batch_size']}. Errors in %; mCE is the "
            "unnormalised mean over 15 corruptions x 5 severities; clean error and mCE are mean "
            "± std over seeds. Δ mCE = row - reference under the same protocol (a control row: "
            "against the run without the control), with a two-stage bootstrap interval (seeds, "
            "then test images; with 2 or 3 seeds the seed stage underestimates seed variance) "
            "and the per-seed deltas.\n\n"
            + ablation_table.markdown_tables(rows)
            + "\n## Variants (options that differ from the method's defaults)\n\n"
            + tabulate(option_lines, ["variant", "method", "options", "seeds"], tablefmt="github")
            + "\n")
    if diagnostics:
        text += ("\n## Test-time contribution of the auxiliary nets (top-1 error %, "
                 "corrections on vs switched off)\n\n" + diagnostics_table(diagnostics) + "\n")
    fsio.write_text(out / "table.md", text)
    # The generic report over the same rows: every view, per corruption, rows named by variant.
    report = build_report(cells.to_dict("records"), prov, vectors=vectors)
    fsio.write_text(out / "cells.csv", report.frame.to_csv(index=False))
    fsio.write_json(out / "summary.json", report.summary)
    fsio.write_text(out / "report.md", markdown_report(report, title))
    return out
