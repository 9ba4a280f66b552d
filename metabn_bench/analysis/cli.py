"""`metabn-bench analysis ...`: the Meta-BN ablation table, its training controls and run
records, and the Meta-BN diagnostics.

Plain functions with Typer annotations; cli.py registers them (with its one-line errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from tabulate import tabulate

from metabn_bench.errors import UserError

COMMANDS = ("ablation", "control", "record", "diagnostics")


def ablation(
    paths: Annotated[list[Path], typer.Argument(help="Run directories or run records (<method>-s<seed>-<hash>, <variant>-s<seed>), or folders of them (run_records/).")],  # noqa: E501
    out: Annotated[Path, typer.Option(help="Directory for table.md, table.json, cells.csv, summary.json, report.md.")],  # noqa: E501
    corrupted: Annotated[Path | None, typer.Option(help="The corrupted set to report (needed only when the runs were evaluated on several).")] = None,  # noqa: E501
    test_batch_size: Annotated[int, typer.Option(help="Test batch size of the rows to report (0 = per protocol, the one with most rows).")] = 0,  # noqa: E501
    title: Annotated[str, typer.Option(help="Title of table.md and report.md.")] = "Meta-BN ablation",
    note: Annotated[list[str] | None, typer.Option(help="key=value recorded in the provenance (e.g. the recipe); repeatable.")] = None,  # noqa: E501
    diagnostics: Annotated[list[Path] | None, typer.Option(help="A diagnostics JSON file to add (repeatable).")] = None,  # noqa: E501
) -> None:
    """The Meta-BN ablation table: variants (seeds grouped) and the evaluation-only controls,
    with Δ mCE against metabn, augmix and vanilla (seed-level intervals)."""
    from metabn_bench.analysis.ablation import write_ablation

    for item in note or []:
        if "=" not in item:
            raise UserError(f"--note '{item}' must be key=value (for example recipe=cifar10-cpu)")
    notes = dict(item.split("=", 1) for item in note or [])
    if test_batch_size < 0:
        raise UserError(f"--test-batch-size {test_batch_size} is not valid; valid: 0 or more")
    path = write_ablation(paths, out, title, notes, list(diagnostics or []), corrupted,
                          test_batch_size)
    typer.echo((path / "table.md").read_text())


def control(
    variant: Annotated[str, typer.Argument(help="Variant name (the run is <work>/<variant>-s<seed>).")],
    seed: Annotated[int, typer.Argument(help="Seed.")],
    work: Annotated[Path, typer.Option(help="Where the run directory goes.")],
    corrupted: Annotated[Path, typer.Option(help="The suite's corrupted set.")],
    results: Annotated[Path, typer.Option(help="Its record goes to <results>/run_records/<variant>-s<seed>/.")],  # noqa: E501
    preset: Annotated[str, typer.Option(help="The suite preset whose recipe the control trains with.")] = "cifar10-cpu",  # noqa: E501
    set_: Annotated[list[str] | None, typer.Option("--set", help="Preset override as for `run` (e.g. train.data.dataset=npy:DIR); repeatable.")] = None,  # noqa: E501
    method: Annotated[str, typer.Option(help="Method of the control.")] = "metabn",
    hparam: Annotated[list[str] | None, typer.Option(help="key=value of the method's hparams (repeatable), e.g. bound=0.")] = None,  # noqa: E501
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = False,
) -> None:
    """Train, evaluate and record one training control of the Meta-BN ablation, with the
    preset's recipe and the given hparams; skipped when its record is already complete."""
    from metabn_bench.analysis.controls import parse_hparams, plan_control, run_control

    ctl = plan_control(variant, seed, preset, list(set_ or []), method,
                       parse_hparams(list(hparam or [])), work, results, device)
    run_control(ctl, corrupted, results, progress=progress, log=typer.echo)


def record(
    run_dir: Annotated[Path, typer.Argument(help="A finished, evaluated run directory.")],
    results: Annotated[Path, typer.Option(help="The record goes to <results>/run_records/<run name>/.")],
) -> None:
    """Save (or refresh, e.g. after evaluating controls) a run's record: its small files."""
    from metabn_bench.runs import EVAL_FILE, require_finished
    from metabn_bench.suite.records import save_record

    require_finished(run_dir)
    if not (run_dir / EVAL_FILE).is_file():
        raise UserError(f"run '{run_dir}' has no {EVAL_FILE}; evaluate it first")
    typer.echo(f"recorded: {save_record(run_dir, results)}")


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
