"""`run --preset`: corrupt once, train every (method, seed), evaluate, report.

Working files (the corrupted set, plan.json, run directories) go under the work directory
(runs/<preset>/); the tables under the results directory (results/<preset>/). Run directories
are named by method, seed and the hash of their config, so anything finished is skipped and
anything interrupted resumes; each is worked on under a lock, so several processes (workers
of the gpus launcher, SLURM jobs, a second suite) never train the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metabn_bench import fsio
from metabn_bench.config import SuiteConfig
from metabn_bench.config_checks import check_suite_config
from metabn_bench.corruptions.generate import corrupt_dataset
from metabn_bench.data.specs import load_split
from metabn_bench.data.store import open_set
from metabn_bench.device import resolve_device
from metabn_bench.reporting.model import Report
from metabn_bench.suite.jobs import make_plan
from metabn_bench.suite.launch import LAUNCHERS, LaunchOptions
from metabn_bench.suite.results import report_suite

Log = Callable[[str], None]


@dataclass
class SuiteResult:
    """Where things went and the report that was written."""

    results_dir: Path
    work_dir: Path
    report: Report | None  # None when the jobs were only submitted


def _validate(cfg: SuiteConfig) -> None:
    """The whole configuration, before any corrupting or training: names, ranges, every
    method's hyperparameters and the evaluation protocols."""
    from metabn_bench.config import replace
    from metabn_bench.training.loop import resolve_config

    check_suite_config(cfg)
    for method in cfg.methods:
        # the class count only sizes the model; 10 is enough to resolve and check hparams
        resolve_config(replace(cfg.train, method=method,
                               hparams=dict(cfg.method_hparams.get(method, {}))), 10)


def run_suite(cfg: SuiteConfig, results_dir: str | Path | None = None,
              work_dir: str | Path | None = None, progress: bool = True,
              log: Log = lambda _msg: None, launcher: str = "local",
              launch: LaunchOptions | None = None, records: bool = True) -> SuiteResult:
    """Run the whole suite described by `cfg`; every step skips what is already done.

    The corrupted set is made here, once; the (method, seed) jobs run where `launcher` puts
    them (launch/); the report is written when they are all finished. With `records` false,
    no run record is written under the results directory and none is taken for a job
    (the regression gate's suites: every run is trained here). `report` is None when
    the launcher only submitted the jobs (a later job writes the report).
    """
    _validate(cfg)
    run_jobs = LAUNCHERS.get(launcher)
    if results_dir is not None:
        fsio.ensure_dir(results_dir, "results directory")
    if work_dir is not None:
        fsio.ensure_dir(work_dir, "work directory")
    results = Path(results_dir or Path("results") / cfg.name)
    work = Path(work_dir or Path("runs") / cfg.name)
    device = resolve_device(cfg.train.device)
    data = cfg.train.data
    test = load_split(data.dataset, "test", data.data_root, cfg.corrupt.n_test, data.label)
    set_dir = work / "corrupted"
    log(f"corrupted set: {len(test)} test images of {test.source} -> {set_dir}")
    _, how = corrupt_dataset(test, set_dir, cfg.corrupt, device, data.dataset, progress)
    log(f"corrupted set ready ({how})")
    open_set(set_dir, verify=True)  # hash check once; evaluations skip it
    plan = make_plan(cfg, work, set_dir, f"{set_dir} ({how})", test.source, len(test.classes),
                     results, records)
    if not run_jobs(plan, launch or LaunchOptions(), progress, log):
        return SuiteResult(results, work, None)
    return SuiteResult(results, work, report_suite(plan, results, device))
