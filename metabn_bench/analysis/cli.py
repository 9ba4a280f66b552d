"""`metabn-bench analysis ...`: the Meta-BN ablation table and the Meta-BN diagnostics.

Plain functions with Typer annotations; cli.py registers them (with its one-line errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from tabulate import tabulate

COMMANDS = ("ablation", "diagnostics")


def ablation(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (metabn variants, vanilla).")],
    corrupted: Annotated[Path, typer.Option(help="The corrupted set the runs were evaluated on.")],
    out: Annotated[Path, typer.Option(help="Directory for cells.csv, summary.json, report.md.")],
    title: Annotated[str, typer.Option(help="Title of report.md.")] = "Meta-BN ablation",
    note: Annotated[list[str] | None, typer.Option(help="key=value recorded in the provenance (e.g. the recipe); repeatable.")] = None,  # noqa: E501
    diagnostics: Annotated[list[Path] | None, typer.Option(help="A diagnostics JSON file to add (repeatable).")] = None,  # noqa: E501
) -> None:
    """The Meta-BN ablation table: metabn variants (and vanilla) as rows of one report."""
    from metabn_bench.analysis.ablation import write_ablation

    notes = dict(item.split("=", 1) for item in note or [])
    path = write_ablation(run_dirs, corrupted, out, title, notes, list(diagnostics or []))
    typer.echo((path / "report.md").read_text())


def diagnostics(
    run_dir: Annotated[Path, typer.Argument(help="A finished metabn run directory.")],
    corrupted: Annotated[Path, typer.Argument(help="A corrupted set with its clean images.")],
    severity: Annotated[int, typer.Option(help="Severity of the corrupted cells.")] = 3,
    n: Annotated[int, typer.Option("--n", help="Images per cell (the first N).")] = 500,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "cpu",
    json_: Annotated[Path | None, typer.Option("--json", help="Also write the diagnosis here.")] = None,
) -> None:
    """What a Meta-BN run's auxiliary nets do: correction sizes per layer, errors on and off."""
    from metabn_bench.analysis.diagnostics import diagnose

    result = diagnose(run_dir, corrupted, severity, n, device)
    typer.echo(f"{result['data_source']}, severity {severity}, {result['n']} images")
    cells = list(result["errors"])
    rows = [[r["layer"], r["channels"], r["feature_size"]]
            + [f"{r[f'{c}/z']:.2f} / {r[f'{c}/dg']:.3f} / {r[f'{c}/db']:.3f}" for c in cells]
            for r in result["per_layer"]]
    typer.echo("\nPer layer: mean |z| / mean |dg| / mean |db|")
    typer.echo(tabulate(rows, ["layer", "C", "size", *cells], tablefmt="github"))
    rows = [[c, f"{e['corrections_on']:.1f}", f"{e['corrections_off']:.1f}",
             f"{e['corrections_off'] - e['corrections_on']:+.1f}"]
            for c, e in result["errors"].items()]
    typer.echo("\nTop-1 error (%) with the auxiliary corrections on and off")
    typer.echo(tabulate(rows, ["cell", "on", "off", "gain from corrections"], tablefmt="github"))
    if json_:
        json_.write_text(json.dumps(result, indent=2))
