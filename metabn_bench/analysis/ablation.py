"""The Meta-BN ablation table: runs of several `metabn` variants (and vanilla) in one report.

Every `metabn` run is reported as `metabn[<variant>]`, the variant being the run directory's
name without its `-s<seed>` suffix, so that seeds of one variant aggregate and variants stay
apart (the generic report groups by method name only). The report lists each variant's
options that differ from the defaults, and optionally the test-time contribution of the
auxiliary nets (errors with corrections on and off, from metabn_diagnostics JSON files).

    python -m metabn_bench.analysis.ablation RUN_DIR... --corrupted DIR --out DIR [--title T]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from tabulate import tabulate

from metabn_bench import fsio, provenance
from metabn_bench.data.store import open_set
from metabn_bench.errors import UserError
from metabn_bench.evaluation import per_image
from metabn_bench.methods.metabn import MetaBN
from metabn_bench.reporting.report import build_report, collect, markdown_report
from metabn_bench.training.loop import load_config

SEED_SUFFIX = re.compile(r"-s\d+$")
# Options that name another run of the same seed (post_hoc's backbone): they differ between
# the seeds of one variant by design.
PER_SEED_OPTIONS = ("backbone_run",)


def variant_name(run_dir: Path) -> str:
    """'joint-s1' -> 'joint'."""
    return SEED_SUFFIX.sub("", run_dir.name)


def changed_options(run_dir: Path) -> dict[str, Any]:
    """The run's hparams that differ from the method's defaults."""
    cfg = load_config(run_dir)
    if cfg.method != "metabn":
        return {}
    defaults = MetaBN.default_hparams()
    return {k: v for k, v in cfg.hparams.items() if defaults.get(k) != v}


def ablation_rows(run_dirs: list[Path], set_id: str
                  ) -> tuple[list[dict[str, Any]], dict[str, Any], per_image.PerImage]:
    """Cell rows of the runs on one corrupted set, methods renamed per variant; the variants;
    and the per-image vectors (for paired intervals; keyed by run, not by method name)."""
    rows: list[dict[str, Any]] = []
    variants: dict[str, dict[str, Any]] = {}
    vectors: per_image.PerImage = {}
    for run_dir in run_dirs:
        label = load_config(run_dir).method
        if label == "metabn":
            label = f"metabn[{variant_name(run_dir)}]"
        options = {k: "(one per seed)" if k in PER_SEED_OPTIONS else v
                   for k, v in changed_options(run_dir).items()}
        if variants.setdefault(label, options) != options:
            raise UserError(f"runs named '{label}' have different options; rename one")
        collected = collect([run_dir])
        found = [r for r in collected.rows if r["set_id"] == set_id]
        if not found:
            raise UserError(f"run '{run_dir}' has no evaluation rows on set {set_id}")
        rows += [{**r, "method": label} for r in found]
        vectors.update(collected.vectors)
    return rows, variants, vectors


def diagnostics_table(paths: list[Path]) -> str:
    """Markdown: error with corrections on / off per cell, from metabn_diagnostics JSON files."""
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


def write_ablation(run_dirs: list[Path], corrupted: Path, out: Path, title: str,
                   notes: dict[str, Any], diagnostics: list[Path]) -> Path:
    """summary.json, cells.csv and report.md of the ablation in `out`."""
    cset = open_set(corrupted, verify=False)
    rows, variants, vectors = ablation_rows(run_dirs, cset.set_id)
    prov = {**provenance.environment("cpu"), "data_source": cset.source,
            "corrupted_set": f"{corrupted} (set {cset.set_id}, {cset.n} images)",
            "runs": [str(p) for p in run_dirs], "variants": variants, **notes}
    report = build_report(rows, prov, vectors=vectors)
    out.mkdir(parents=True, exist_ok=True)
    fsio.write_text(out / "cells.csv", report["frame"].to_csv(index=False))
    fsio.write_json(out / "summary.json", report["summary"])
    text = markdown_report(report, title)
    variant_lines = [[name, ", ".join(f"{k}={v}" for k, v in opts.items()) or "(defaults)"]
                     for name, opts in variants.items()]
    text += "\n## Variants (options that differ from the defaults)\n\n"
    text += tabulate(variant_lines, ["row", "options"], tablefmt="github") + "\n"
    if diagnostics:
        text += ("\n## Test-time contribution of the auxiliary nets (top-1 error %, "
                 "corrections on vs switched off)\n\n" + diagnostics_table(diagnostics) + "\n")
    fsio.write_text(out / "report.md", text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--corrupted", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="Meta-BN ablation")
    parser.add_argument("--note", action="append", default=[],
                        help="key=value recorded in the provenance (e.g. the recipe)")
    parser.add_argument("--diagnostics", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    notes = dict(item.split("=", 1) for item in args.note)
    try:
        out = write_ablation(args.run_dirs, args.corrupted, args.out, args.title, notes,
                             args.diagnostics)
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
