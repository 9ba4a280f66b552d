"""The `metabn-bench` command line: parse options, call one library function, print.

Errors in the user's input (UserError) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from metabn_bench import __version__, fsio
from metabn_bench.cli.base import (
    STDERR_IS_TTY,
    DeviceOpt,
    ProgressOpt,
    app,
    check_out_dir,
    command,
    csv_list,
    int_list,
)
from metabn_bench.errors import UserError


def _version(value: bool) -> None:
    if value:
        typer.echo(f"metabn-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version.")] = False) -> None:
    """Robustness of image classifiers to common corruptions, built around Meta BatchNorm."""


@command("list")
def list_cmd(kind: Annotated[str, typer.Argument(
        help="methods | corruptions | archs | datasets | presets | protocols")]) -> None:
    """List registered names (one per line, with a description)."""
    from metabn_bench.cli.listing import listing

    for name, text in listing(kind):
        typer.echo(f"{name:<22} {text}")


@command()
def corrupt(
    dataset: Annotated[str, typer.Option(help="Dataset SPEC: synthetic, cifar10, cifar100, "
                                              "tinyimagenet, npy:DIR, folder:DIR")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory of the corrupted set.")],
    split: Annotated[str, typer.Option(help="Split to corrupt.")] = "test",
    corruptions: Annotated[str | None, typer.Option(help="Comma-separated names (default: all common).")] = None,  # noqa: E501
    severities: Annotated[str, typer.Option(help="Comma-separated severities.")] = "1,2,3,4,5",
    preset: Annotated[str, typer.Option("--size-preset", "--preset", help="Corruption parameter table by image size (not a suite preset): auto | cifar | tinyimagenet | imagenet")] = "auto",  # noqa: E501
    extras: Annotated[bool, typer.Option(help="Also the 4 extra corruptions.")] = False,
    n: Annotated[int, typer.Option(help="Use a class-balanced subset of N images (0 = all).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of every random corruption.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per batch (output does not depend on it).")] = 500,
    backend: Annotated[str, typer.Option(help="torch | imagecorruptions")] = "torch",
    benchmark: Annotated[str, typer.Option(help="c: the -C corruptions (Hendrycks & Dietterich) | c-bar: the 10 of CIFAR-10-C-bar or ImageNet-C-bar, by table (Mintun et al. 2021)")] = "c",  # noqa: E501
    data_root: Annotated[str, typer.Option(help="Where cifar10/cifar100/tinyimagenet live.")] = "data",
    label: Annotated[str, typer.Option(help="Provenance label of the data source.")] = "",
    device: DeviceOpt = "auto",
    progress: ProgressOpt = STDERR_IS_TTY,
) -> None:
    """Make a corrupted set in the released CIFAR-10-C layout (resumable)."""
    from metabn_bench.config import CorruptConfig
    from metabn_bench.config_checks import check_corrupt_config
    from metabn_bench.corruptions.generate import corrupt_dataset
    from metabn_bench.data.specs import load_split
    from metabn_bench.device import resolve_device

    cfg = CorruptConfig(preset=preset, corruptions=csv_list(corruptions), extras=extras,
                        severities=int_list(severities, "--severities"), seed=seed, n_test=n,
                        batch_size=batch_size, backend=backend, benchmark=benchmark)
    check_corrupt_config(cfg)  # before the data set is loaded or anything is written
    check_out_dir(out_dir)
    dev = resolve_device(device)
    clean = load_split(dataset, split, data_root, n, label)
    cset, how = corrupt_dataset(clean, out_dir, cfg, dev, dataset, progress)
    typer.echo(f"{how}; {len(cset.corruptions)} corruptions x {len(cset.severities)} severities "
              f"of {cset.n} images -> {out_dir}")


@command("train")
def train_cmd(
    method: Annotated[str, typer.Option(help="Method name (metabn-bench list methods).")],
    dataset: Annotated[str | None, typer.Option(help="Dataset SPEC.")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture (metabn-bench list archs).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of TrainConfig keys.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value override (repeatable), e.g. optim.lr=0.05")] = None,  # noqa: E501
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run directory (default runs/<dataset>/<method>-s<seed>-<hash>).")] = None,  # noqa: E501
    data_root: Annotated[str | None, typer.Option(help="Where cifar10/cifar100/tinyimagenet live.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    sync_bn: Annotated[bool, typer.Option("--sync-bn/--no-sync-bn", help="Under torchrun: BatchNorm statistics over all processes (default) or per process.")] = True,  # noqa: E501
    progress: ProgressOpt = STDERR_IS_TTY,
) -> None:
    """Train one method (resumes an interrupted run in the same directory).

    Under `torchrun --nproc_per_node=N -m metabn_bench train ...` the N processes train the run
    together (data parallel, torch.distributed); rank 0 writes the run directory.
    """
    from metabn_bench.config import build_train_config
    from metabn_bench.config_checks import check_train_config
    from metabn_bench.training import distributed
    from metabn_bench.training.loop import train

    check_out_dir(out_dir)
    base: dict[str, object] = {"method": method}
    data: dict[str, object] = {}
    if dataset is not None:
        data["dataset"] = dataset
    if data_root is not None:
        data["data_root"] = data_root
    if data:
        base["data"] = data
    for key, value in (("arch", arch), ("epochs", epochs), ("seed", seed), ("device", device)):
        if value is not None:
            base[key] = value
    cfg = build_train_config(base, str(config) if config else None, set_ or ())
    check_train_config(cfg)  # before torch.distributed starts or anything is written
    main = distributed.init_from_env(cfg.device, sync_bn).rank == 0
    try:
        info = train(cfg, out_dir, progress=progress)
    finally:
        distributed.shutdown()
    state = "already finished" if info.skipped else (
        f"resumed after epoch {info.resumed_from}" if info.resumed_from else "trained")
    if main:
        typer.echo(f"{state}: {info.run_dir}")


# `evaluate` lives in its own module; imported here, so that --help lists it after `train`.
from metabn_bench.cli import evaluating  # noqa: E402, F401


@command()
def report(
    paths: Annotated[list[Path], typer.Argument(help="Run directories, results directories or trees of runs.")],  # noqa: E501
    format_: Annotated[str, typer.Option("--format", help="markdown | latex | csv | json | html")] = "markdown",  # noqa: E501
    out_path: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None,  # noqa: E501
    baseline: Annotated[str, typer.Option(help="Method the deltas are measured against.")] = "vanilla",
    plots: Annotated[Path | None, typer.Option(help="Also write PNG plots into this directory (linked from the report).")] = None,  # noqa: E501
) -> None:
    """Tables (and plots) from evaluation results: every view of the long per-cell table."""
    from metabn_bench.reporting.html_page import reproduce_command
    from metabn_bench.reporting.report import FORMATS, FORMATS_EXT, format_report, report_from_paths

    if format_ not in FORMATS:
        raise UserError(f"unknown format '{format_}'; valid: {', '.join(FORMATS)}")
    if out_path is not None and out_path.is_dir():
        raise UserError(f"--out '{out_path}' is a directory; valid: a file name, e.g. "
                        f"{out_path / ('report.' + FORMATS_EXT.get(format_, format_))}")
    check_out_dir(plots, "--plots")
    from metabn_bench.methods import METHODS

    rep = report_from_paths(paths, baseline, plots, tuple(METHODS.names()))
    again = ["report", *map(str, paths), "--format", format_, "--baseline", baseline,
             *(["--out", str(out_path)] if out_path else [])]
    text = format_report(rep, format_, doc_dir=out_path.parent if out_path else Path.cwd(),
                         command=reproduce_command(again))
    if out_path:
        fsio.write_text(out_path, text)
        typer.echo(f"wrote {out_path}")
    else:
        sys.stdout.write(text)
    if plots:
        typer.echo(f"plots: {plots}/ ({len(rep.images)} PNG files)", err=True)


@command()
def check(
    baseline: Annotated[Path | None, typer.Option(help="Committed results directory (or its summary.json).")] = None,  # noqa: E501
    current: Annotated[Path | None, typer.Option(help="New results directory or summary.json, or a `gate exact` directory.")] = None,  # noqa: E501
    tolerance: Annotated[float | None, typer.Option(help="Allowed move in percentage points (default: the bands of the baseline's noise.json).")] = None,  # noqa: E501
    strict: Annotated[bool, typer.Option(help="Also fail on rows the baseline lacks.")] = False,
    update_baseline: Annotated[Path | None, typer.Option(help="Same as `metabn-bench baseline DIR`: re-run --preset from scratch and rewrite DIR.")] = None,  # noqa: E501
    preset: Annotated[str, typer.Option(help="Preset that --update-baseline runs.")] = "smoke",
) -> None:
    """Regression gate: exit 0 pass, 1 regression, 2 unusable input (or --update-baseline)."""
    if update_baseline is not None:
        _update_baseline(update_baseline, preset)
        return
    if baseline is None or current is None:
        raise UserError("check needs --baseline and --current (or --update-baseline DIR)")
    from metabn_bench.gate.check import check_paths

    outcome = check_paths(baseline, current, tolerance, strict)
    for line in outcome.result.lines():
        typer.echo(line)
    if not outcome.result.passed:
        typer.echo(f"FAIL ({outcome.tier} tier)")
        raise typer.Exit(1)
    typer.echo(outcome.result.summary_line() + f" ({outcome.tier} tier)")


def _update_baseline(target: Path, preset: str) -> None:
    from metabn_bench.gate.baseline import update_baseline as update

    outcome = update(preset, target, log=lambda m: typer.echo(m, err=True))
    for line in outcome.lines():
        typer.echo(line)
    typer.echo(f"baseline rewritten: {target}/ (review the diff, then commit it)")


@command()
def baseline(
    results_dir: Annotated[Path, typer.Argument(help="The committed baseline directory to rewrite.")] = Path("results/smoke"),  # noqa: E501
    preset: Annotated[str, typer.Option(help="Preset to re-run from scratch.")] = "smoke",
) -> None:
    """Rewrite the CI baseline: re-run the preset from scratch, new reference checkpoints."""
    _update_baseline(results_dir, preset)


@command("cam")
def cam_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Finished run directories (one column each).")],
    corrupted: Annotated[Path, typer.Option(help="Corrupted set directory.")],
    out_path: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("cam.png"),
    corruptions: Annotated[str | None, typer.Option(help="Comma-separated corruptions (default: gaussian_noise,defocus_blur).")] = None,  # noqa: E501
    severity: Annotated[int, typer.Option(help="Severity of the corrupted rows.")] = 3,
    images: Annotated[str | None, typer.Option(help="Comma-separated test-image indices (default: one per class).")] = None,  # noqa: E501
    n: Annotated[int, typer.Option(help="Number of images when --images is not given.")] = 4,
    kind: Annotated[str, typer.Option(help="gradcam | cam | both")] = "gradcam",
    target: Annotated[str, typer.Option(help="Class the map explains: label | predicted")] = "label",
    layer: Annotated[str | None, typer.Option(help="Grad-CAM at this named module (default: the last feature map).")] = None,  # noqa: E501
    device: DeviceOpt = "auto",
) -> None:
    """Class activation maps (Grad-CAM / CAM), clean and corrupted, runs side by side in one PNG."""
    from metabn_bench.analysis.cam import CamRequest, cam_grid

    request = CamRequest(corruptions=csv_list(corruptions), severity=severity,
                         images=int_list(images, "--images"), n_images=n, kind=kind, target=target,
                         layer=layer)
    path = cam_grid(run_dirs, corrupted, out_path, request, device)
    typer.echo(f"wrote {path}")


@command()
def run(
    preset: Annotated[str, typer.Option(help="Preset name (metabn-bench list presets) or YAML path.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Results directory (default results/<preset>).")] = None,  # noqa: E501
    work: Annotated[Path | None, typer.Option(help="Working directory for runs and data (default runs/<preset>).")] = None,  # noqa: E501
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a preset key, e.g. train.epochs=2.")] = None,  # noqa: E501
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    launcher: Annotated[str, typer.Option(help="local | gpus (one worker per GPU) | slurm (one job per run, submitit)")] = "local",  # noqa: E501
    launch: Annotated[list[str] | None, typer.Option(help="Launcher option key=value (repeatable): gpus, workers, executor, partition, account, time_min, gpus_per_job, tasks_per_job, cpus_per_task, mem_gb, array_parallelism, slurm_args, wait, sync_bn, poll_s.")] = None,  # noqa: E501
    progress: ProgressOpt = STDERR_IS_TTY,
) -> None:
    """Run a whole suite: corrupt, train every method and seed, evaluate, report.

    Exit code 1 when some runs failed (the others finish; run again to retry them).
    """
    from metabn_bench.config import load_preset
    from metabn_bench.reporting.not_applicable import footnotes
    from metabn_bench.reporting.report import render, summary_table
    from metabn_bench.suite.jobs import SuiteRunError
    from metabn_bench.suite.launch import parse_launch_options
    from metabn_bench.suite.runner import run_suite

    overrides = list(set_ or [])
    if device:
        overrides.append(f"train.device={device}")
    cfg = load_preset(preset, overrides)
    options = parse_launch_options(launch or [])
    check_out_dir(out_dir)
    check_out_dir(work, "--work")
    try:
        result = run_suite(cfg, out_dir, work, progress, log=lambda m: typer.echo(m, err=True),
                           launcher=launcher, launch=options)
    except SuiteRunError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if result.report is None:
        typer.echo(f"jobs submitted; metabn-bench status --preset {preset} shows their progress")
        return
    typer.echo(render(summary_table(result.report.rows,
                                    not_applicable=result.report.not_applicable), "markdown"))
    for note in footnotes(result.report.not_applicable):
        typer.echo(note)
    typer.echo(f"\nresults: {result.results_dir}/ (report.md, summary.json, cells.csv, plots/)")


@command()
def status(
    preset: Annotated[str, typer.Option(help="Preset name or YAML path (as given to run).")],
    work: Annotated[Path | None, typer.Option(help="Working directory (default runs/<preset>).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Results directory (default results/<preset>).")] = None,  # noqa: E501
    set_: Annotated[list[str] | None, typer.Option("--set", help="The same overrides as given to run.")] = None,  # noqa: E501
    device: Annotated[str | None, typer.Option(help="As given to run (not part of the runs' identity).")] = None,  # noqa: E501
) -> None:
    """What a suite has done: each (method, seed) done, running, failed, interrupted or missing."""
    from metabn_bench.config import load_preset
    from metabn_bench.reporting.report import render
    from metabn_bench.suite.status import status_summary, status_table, suite_status

    overrides = list(set_ or [])
    if device:
        overrides.append(f"train.device={device}")
    state = suite_status(load_preset(preset, overrides), work, out_dir)
    typer.echo("\n".join(status_summary(state)) + "\n")
    typer.echo(render(status_table(state), "markdown"))


def _sub_app(name: str, module: Any, help_: str) -> None:
    """`metabn-bench NAME ...`: the functions named in module.COMMANDS as subcommands."""
    sub = typer.Typer(no_args_is_help=True, help=help_)
    for fn in module.COMMANDS:
        command(fn.replace("_", "-"), sub)(getattr(module, fn))
    app.add_typer(sub, name=name)


def _register_sub_apps() -> None:
    from metabn_bench.analysis import cli as analysis_cli
    from metabn_bench.gate import cli as gate_cli

    _sub_app("gate", gate_cli, "The regression gate: tiers, noise, regressions.")
    _sub_app("analysis", analysis_cli, "Meta-BN analyses: the ablation table, the diagnostics.")


_register_sub_apps()


def main() -> None:
    """Entry point of the `metabn-bench` command."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
