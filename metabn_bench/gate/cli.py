"""`metabn-bench gate ...`: the regression gate's tiers, its noise measurement, its regressions.

Plain functions with Typer annotations; cli.py registers them (with its one-line errors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metabn_bench.errors import UserError

COMMANDS = ("exact", "noise", "spread", "regressions")
BaselineOpt = Annotated[Path, typer.Option(help="The committed baseline directory.")]


def exact(
    out: Annotated[Path, typer.Option(help="Directory for the exact tier's files.")],
    reference: Annotated[Path, typer.Option(help="Reference checkpoints (the baseline's reference/).")] = Path("results/smoke/reference"),  # noqa: E501
    preset: Annotated[str, typer.Option(help="Preset whose corrupted set and methods are used.")] = "smoke",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a preset key.")] = None,
) -> None:
    """The exact tier: corrupted-set hashes and statistics, reference checkpoints evaluated,
    training and Tent steps."""
    from metabn_bench.gate.baseline import run_exact_tier

    run_exact_tier(out, reference, preset, tuple(set_ or ()))
    typer.echo(f"exact tier written to {out}/; compare: metabn-bench check --baseline "
               f"{reference.parent} --current {out}")


def noise(
    baseline: BaselineOpt = Path("results/smoke"),
    scratch: Annotated[Path, typer.Option(help="Work directory of the variant runs (resumable).")] = Path("runs/gate-noise"),  # noqa: E501
    tiers: Annotated[str, typer.Option(help="exact, statistical or both (comma-separated).")] = "exact,statistical",  # noqa: E501
    preset: Annotated[str, typer.Option(help="Preset of the baseline.")] = "smoke",
) -> None:
    """Measure the gate's noise under simulated CPUs and seeds; rewrite BASELINE/noise.json."""
    from metabn_bench.gate.measure import measure_noise

    chosen = tuple(t.strip() for t in tiers.split(",") if t.strip())
    path = measure_noise(preset, baseline, scratch, chosen, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"wrote {path}")


def spread(baseline: BaselineOpt = Path("results/smoke")) -> None:
    """How far each measured run moved from the baseline run, and its leave-one-out check."""
    from tabulate import tabulate

    from metabn_bench.gate.noise import load_noise, spread_table

    noise = load_noise(baseline)
    if "statistical" not in noise:
        raise UserError("noise.json has no statistical record; run `metabn-bench gate noise`")
    typer.echo(tabulate(spread_table(noise), headers="keys", tablefmt="github", floatfmt=".2f"))
    exact = noise.get("exact")
    if exact:
        moves = ", ".join(f"{k} {v:.4f}" for k, v in exact["max_abs_move"].items())
        typer.echo(f"exact tier across {', '.join(exact['runs'])}: largest moves {moves}; "
                   f"fingerprints {exact['max_relative_move']:.1e} relative; corrupted "
                   f"files differing: {exact['differing_corrupted_files'] or 'none'}")


def regressions(
    baseline: BaselineOpt = Path("results/smoke"),
    scratch: Annotated[Path, typer.Option(help="Where the patched copies go.")] = Path("runs/gate-regressions"),  # noqa: E501
    only: Annotated[str | None, typer.Option(help="Comma-separated regression names (default: all).")] = None,
    statistical: Annotated[bool, typer.Option(help="Also run the statistical tier (a suite each).")] = False,
) -> None:
    """Apply each deliberate regression to a scratch copy; the gate must fail on every one."""
    from metabn_bench.gate.regressions import run_regressions

    names = [n.strip() for n in only.split(",")] if only else None
    outcomes = run_regressions(baseline, scratch, names, statistical, log=lambda m: typer.echo(m, err=True))
    missed = [name for name, tiers in outcomes.items()
              if all(v == "MISSED" for v in tiers.values())]
    for name, tiers in outcomes.items():
        typer.echo(f"{name}: " + "; ".join(f"{t} {v}" for t, v in tiers.items()))
    if missed:
        typer.echo(f"the gate missed {len(missed)} of {len(outcomes)}: {', '.join(missed)}")
        raise typer.Exit(1)
    typer.echo(f"the gate caught all {len(outcomes)} regressions")
