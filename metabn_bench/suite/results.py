"""The results of a suite: its report written from the plan's finished runs.

Its own module because both the runner (after a local or gpus launch) and the SLURM report
job write it, and the launchers must not import the runner that imports them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from metabn_bench import provenance
from metabn_bench.config import to_dict
from metabn_bench.data.store import open_set
from metabn_bench.device import resolve_device
from metabn_bench.reporting.model import Report
from metabn_bench.reporting.report import build_report, collect, write_results
from metabn_bench.runs import DONE, EVAL_FILE
from metabn_bench.suite.jobs import SuitePlan
from metabn_bench.suite.records import record_dir


def _source(plan: SuitePlan, run_dir: Path) -> Path:
    """The run directory when it holds the finished run, else its committed record (a run
    the suite skipped because it was finished earlier or elsewhere)."""
    if (run_dir / DONE).exists() and (run_dir / EVAL_FILE).exists():
        return run_dir
    record = record_dir(plan.results_dir, run_dir)
    return record if plan.records and record.exists() else run_dir


def report_suite(plan: SuitePlan, results_dir: Path,
                 device: torch.device | None = None) -> Report:
    """Write results/<preset>/ (cells.csv, summary.json, report.md) from the plan's runs."""
    cfg = plan.suite
    set_id = open_set(plan.set_dir, verify=False).set_id
    found = collect([_source(plan, j.run_dir) for j in plan.jobs])
    rows = [r for r in found.rows if r["protocol"] in cfg.eval.protocols and r["set_id"] == set_id]
    prov = {**provenance.environment(device or resolve_device(cfg.train.device)),
            "data_source": plan.data_source, "preset": cfg.name,
            "seeds": sorted({s for m in cfg.methods for s in cfg.seeds_for(m)}), "arch": cfg.train.arch,
            "corrupted_set": plan.set_label, "config": to_dict(cfg)}
    na_rows = [r for r in found.not_applicable
               if r["protocol"] in cfg.eval.protocols and r["set_id"] == set_id]
    report = build_report(rows, prov, vectors=found.vectors, not_applicable=na_rows,
                          training=found.training)
    write_results(report, results_dir, f"{cfg.name}: {cfg.description or 'results'}")  # + plots/
    return report
