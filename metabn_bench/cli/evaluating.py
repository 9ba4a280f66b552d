"""`metabn-bench evaluate`: a run of this toolkit, or a model made elsewhere, on a corrupted set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metabn_bench.cli.base import STDERR_IS_TTY, DeviceOpt, ProgressOpt, command, csv_list, int_list
from metabn_bench.errors import UserError


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(t) for t in csv_list(text))
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, got '{text}'") from None


@command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path | None, typer.Argument(help="A finished run directory (or use --model).")] = None,
    corrupted: Annotated[Path | None, typer.Option(help="Corrupted set directory.")] = None,
    adapt: Annotated[list[str] | None, typer.Option(help="Test-time protocol: none | bn[:prior=N] | tent (repeatable or comma-separated); Meta-BN controls: P:control=zero-z|shuffle-z|static[,static_images=N].")] = None,  # noqa: E501
    batch_size: Annotated[int, typer.Option(help="Test batch size (0 = the protocol's default).")] = 0,
    batch_sizes: Annotated[str | None, typer.Option(help="Sweep test batch sizes, e.g. 1,2,4,16,64,200: one set of rows per size.")] = None,  # noqa: E501
    extras: Annotated[bool, typer.Option(help="Also the 4 extra corruptions.")] = False,
    verify: Annotated[bool, typer.Option(help="Check the set's sha256 hashes.")] = True,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = STDERR_IS_TTY,
    stream: Annotated[str, typer.Option(help="Test stream: per-cell | continual | gradual | mixed | dirichlet.")] = "per-cell",  # noqa: E501
    reset: Annotated[str, typer.Option(help="Reset the protocol: cell | corruption | never | every:K (batches).")] = "cell",  # noqa: E501
    stream_seed: Annotated[int, typer.Option(help="Seed of the stream's shuffles (mixed, dirichlet).")] = 0,
    dirichlet_delta: Annotated[float, typer.Option(help="Dirichlet concentration of --stream dirichlet (small = one class per batch).")] = 0.1,  # noqa: E501
    model: Annotated[Path | None, typer.Option(help="A model made elsewhere: weights file (with --entry) or TorchScript file.")] = None,  # noqa: E501
    entry: Annotated[str | None, typer.Option(help="module:function (or file.py:function) that returns the nn.Module of --model's weights.")] = None,  # noqa: E501
    out: Annotated[Path | None, typer.Option(help="With --model: directory of the result rows.")] = None,
    name: Annotated[str, typer.Option(help="With --model: the name rows give it (default: the file's stem).")] = "",  # noqa: E501
    input_range: Annotated[str | None, typer.Option(help="With --model: 0-1 | 0-255, the range the model expects.")] = None,  # noqa: E501
    mean: Annotated[str | None, typer.Option(help="With --model: per-channel mean, in the input range's units (default 0).")] = None,  # noqa: E501
    std: Annotated[str | None, typer.Option(help="With --model: per-channel std, in the input range's units (default 1).")] = None,  # noqa: E501
    image_size: Annotated[int | None, typer.Option(help="With --model: resize to this size (default: as stored).")] = None,  # noqa: E501
) -> None:
    """Evaluate a run (or --model) on clean + every cell of a corrupted set; rows go to
    RUN_DIR/eval.jsonl (or --out/eval.jsonl)."""
    from metabn_bench.evaluation.evaluate import evaluate
    from metabn_bench.evaluation.external import Preprocessing, source_from_options
    from metabn_bench.evaluation.protocols import split_specs
    from metabn_bench.evaluation.streams import parse_reset, stream_label
    from metabn_bench.reporting.batch_sizes import batch_size_view
    from metabn_bench.reporting.not_applicable import footnotes, summarise
    from metabn_bench.reporting.report import build_report, render, summary_table
    from metabn_bench.runs import is_applicable

    if corrupted is None:
        raise UserError("--corrupted is required; valid: a corrupted set directory "
                        "(make one with metabn-bench corrupt)")
    declared = (input_range, mean, std, image_size)
    pre = None if all(v is None for v in declared) else Preprocessing(
        input_range or "0-1", _floats(mean, "--mean") or (0.0,), _floats(std, "--std") or (1.0,),
        image_size or 0)
    source = source_from_options(run_dir, model, entry, out, pre, name)
    protocols = tuple(p for item in (adapt or ["none"]) for p in split_specs(item))
    if not protocols:
        raise UserError("--adapt names no protocol; valid: none, bn[:prior=N], tent")
    sizes = int_list(batch_sizes, "--batch-sizes")
    rows = evaluate(source, corrupted, protocols, batch_size, extras, device, verify, progress,
                    stream, reset, stream_seed, dirichlet_delta, sizes)
    labels = {stream_label(p, stream, parse_reset(reset), stream_seed, dirichlet_delta)
              for p in protocols}
    rows = [r for r in rows if r.get("sweep_protocol", r["protocol"]) in labels
            and ("sweep_protocol" in r) == bool(sizes)
            and (not sizes or int(r["test_batch_size"]) in sizes)]
    measured = [r for r in rows if is_applicable(r)]
    na_rows = [r for r in rows if not is_applicable(r)]
    if measured:
        report = build_report(measured, {}, not_applicable=na_rows)
        if sizes:
            typer.echo(render(batch_size_view(report.frame), "markdown"))
        else:
            typer.echo(render(summary_table(report.rows, not_applicable=report.not_applicable),
                              "markdown"))
        notes = footnotes(report.not_applicable)
    else:  # every protocol asked for is n/a: nothing to tabulate
        notes = footnotes(summarise(na_rows))
    for note in notes:
        typer.echo(note)
