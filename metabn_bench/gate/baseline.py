"""The CI regression gate's baseline: how the smoke suite is re-run and the baseline updated.

The gate has two tiers (results/README.md): the exact tier (exact.py: corrupted bytes,
committed reference checkpoints evaluated, a few training steps) and the statistical tier (the
preset's suite trained from scratch), each compared with the committed results/<preset>/
within bands measured by noise.py. Updating the committed baseline is an explicit command
(`make baseline`, i.e. `metabn-bench baseline results/smoke`); no test ever writes it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from metabn_bench import fsio, provenance
from metabn_bench.config import SuiteConfig, load_preset, to_dict
from metabn_bench.data.specs import load_split
from metabn_bench.errors import UserError
from metabn_bench.gate.compare import CheckResult, compare, load_summary
from metabn_bench.gate.exact import REFERENCE, compute_exact_tier, save_references
from metabn_bench.reporting.report import RESULT_FILES, markdown_report
from metabn_bench.runs import DONE
from metabn_bench.suite.launch import LaunchOptions
from metabn_bench.suite.runner import SuiteResult, run_suite

GATE_PRESET = "smoke"
# The baseline's exact tier is computed with 2 torch threads, as the machine that measured the
# noise ran it; the gate itself runs with whatever threads the machine gives (its bands cover
# 1 and 2).
GATE_THREADS = 2
# The statistical tier trains its suite in 2 CPU worker processes of one thread each (the suite's
# gpus launcher without GPUs): on 2 cores, small networks train faster as two one-thread
# processes than as one two-thread process, and with every method of the zoo in the smoke preset
# one process would take most of `make test`'s budget. One thread is a measured variant
# (noise.json: threads1), so the bands hold either way.
GATE_WORKERS = 2
# `make baseline` lists every number that moved against the old baseline, for review.
REVIEW_TOLERANCE = 0.001
GATE_OVERRIDES = ("train.device=cpu",)  # CUDA kernels differ from the CPU's: the gate is CPU-only
CAM_FILE = "cam.png"
# What a suite writes into its work directory (the suite runner's plan, worker logs, runs).
SUITE_WORK_ENTRIES = ("corrupted", "train", "plan.json", "logs")

Log = Callable[[str], None]


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Run a block with exactly `n` torch CPU threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gate_config(preset: str = GATE_PRESET, overrides: Sequence[str] = ()) -> SuiteConfig:
    """The preset as the gate runs it (CPU, plus any extra `key=value` overrides)."""
    return load_preset(preset, [*GATE_OVERRIDES, *overrides])


def run_gate_suite(results_dir: str | Path, work_dir: str | Path, preset: str = GATE_PRESET,
                   overrides: Sequence[str] = (), log: Log = lambda _m: None,
                   workers: int = GATE_WORKERS) -> SuiteResult:
    """Run the preset from scratch into the given (fresh) directories (the statistical tier).

    Without run records (suite/records.py): the gate's numbers come from runs trained here,
    never from records of another run, and `make baseline` copies every file of the results
    directory into the committed baseline, so records there would land in the checkout.
    With `workers` > 1 the runs train in that many CPU worker processes (one thread each when
    there are as many cores), with 1 in this process.
    """
    launcher, launch = ("gpus", LaunchOptions(workers=workers)) if workers > 1 else ("local", None)
    return run_suite(gate_config(preset, overrides), results_dir, work_dir, progress=False, log=log,
                     records=False, launcher=launcher, launch=launch)


def run_exact_tier(out_dir: str | Path, reference_dir: str | Path, preset: str = GATE_PRESET,
                   overrides: Sequence[str] = ()) -> Path:
    """Compute the exact tier against the committed reference checkpoints into `out_dir`."""
    cfg = gate_config(preset, overrides)
    prov = {**provenance.environment("cpu"), "data_source": _data_source(cfg), "preset": cfg.name,
            "seeds": list(cfg.seeds), "arch": cfg.train.arch, "config": to_dict(cfg),
            "tier": "exact: committed reference checkpoints"}
    compute_exact_tier(cfg, Path(reference_dir), Path(out_dir), prov)
    return Path(out_dir)


def _data_source(cfg: SuiteConfig) -> str:
    data = cfg.train.data
    return load_split(data.dataset, "test", data.data_root, cfg.corrupt.n_test, data.label).source


def _first_seed_runs(cfg: SuiteConfig, work: Path) -> dict[str, Path]:
    """One finished run per method (its first seed), in the preset's method order."""
    runs = {}
    for method in cfg.methods:
        found = sorted(work.glob(f"train/{method}-s{cfg.seeds[0]}-*/{DONE}"))
        if found:
            runs[method] = found[0].parent
    return runs


def _add_cam(result: SuiteResult, cfg: SuiteConfig, log: Log) -> None:
    """The CAM grid of the suite's runs, linked from report.md; synthetic data only.

    Pictures of real data sets are made on demand and never committed, so a baseline of any
    other data set gets none.
    """
    if cfg.train.data.dataset != "synthetic":
        log("no CAM picture: the baseline is not of the synthetic set")
        return
    from metabn_bench.analysis.cam import CamRequest, cam_grid

    with pinned_threads(GATE_THREADS):  # 3 images at 80 dpi: a committed file stays small
        path = cam_grid(list(_first_seed_runs(cfg, result.work_dir).values()), result.work_dir / "corrupted",
                        result.results_dir / CAM_FILE, CamRequest(n_images=3, dpi=80), device="cpu")
    report = result.report
    report.images.append(("Grad-CAM of each method on synthetic test images, clean and "
                             "corrupted", path))
    title = f"{cfg.name}: {cfg.description or 'results'}"
    fsio.write_text(result.results_dir / "report.md",
                    markdown_report(report, title, result.results_dir))


def _replace_results(new: Path, target: Path) -> None:
    """Swap the generated files of `target` for those of `new` (stale plots removed)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (*RESULT_FILES, CAM_FILE):
        (target / name).unlink(missing_ok=True)
    for name in ("plots", REFERENCE):
        shutil.rmtree(target / name, ignore_errors=True)
    for path in sorted(new.rglob("*")):
        if path.is_file():
            fsio.write_bytes(target / path.relative_to(new), path.read_bytes())


def clear_work_dir(work: Path) -> None:
    """Remove an earlier baseline's work directory; refuse one this command did not make."""
    if not work.exists():
        return
    foreign = sorted(p.name for p in work.iterdir() if p.name not in SUITE_WORK_ENTRIES)
    if foreign:  # never wipe a directory this command did not make
        raise UserError(f"'{work}' holds {', '.join(foreign)}: not a baseline work directory; "
                        "move it away or choose another")
    shutil.rmtree(work)


def update_baseline(preset: str, results_dir: str | Path, log: Log = lambda _m: None,
                    overrides: Sequence[str] = (), work_dir: str | Path | None = None) -> CheckResult:
    """Re-run `preset` from scratch and rewrite `results_dir`; returns old-vs-new differences.

    Both tiers are rewritten: the suite's files, and reference/ (each method's first-seed
    model as the new reference checkpoint, and the exact tier computed from it). The work
    directory (default runs/baseline-<preset>/) is emptied first, so finished runs of an older
    code version are never reused; it is kept afterwards for inspection (and for
    `metabn-bench cam`). The results directory changes only once everything succeeded; its
    noise.json is kept (re-measure it with `metabn-bench gate noise`).
    """
    target = Path(results_dir)
    old = load_summary(target) if (target / "summary.json").is_file() else None
    cfg = gate_config(preset, overrides)
    work = Path(work_dir) if work_dir is not None else Path("runs") / f"baseline-{preset}"
    clear_work_dir(work)
    with tempfile.TemporaryDirectory(prefix="metabn-baseline-") as tmp:
        with pinned_threads(GATE_THREADS):
            result = run_gate_suite(Path(tmp) / "results", work, preset, overrides, log)
            _add_cam(result, cfg, log)
            reference = result.results_dir / REFERENCE
            save_references(_first_seed_runs(cfg, work), reference)
            log("exact tier: evaluating the new reference checkpoints")
            run_exact_tier(reference, reference, preset, overrides)
        new = load_summary(result.results_dir)
        diff = CheckResult(REVIEW_TOLERANCE)
        if old is not None:
            try:
                diff = compare(old, new, REVIEW_TOLERANCE)
            except UserError as exc:  # e.g. another data set: nothing to compare, still replace
                diff.context.append(str(exc))
        _replace_results(result.results_dir, target)
    return diff
