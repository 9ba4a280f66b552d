"""A suite as a list of jobs: one (method, seed) = one run directory, trained then evaluated.

`plan.json` in the work directory holds the suite config, the corrupted set and every job's
resolved training config, so that any process (the suite itself, a worker per GPU, a SLURM
job) can run any job from it. A job runs under the run directory's lock (runlock.py), so two
processes never work on the same run; a finished job is skipped; an interrupted one resumes.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metabn_bench import fsio, runs
from metabn_bench.config import SuiteConfig, TrainConfig, from_dict, replace, to_dict
from metabn_bench.data.arrays import ArraySet
from metabn_bench.errors import UserError
from metabn_bench.runlock import RunLock, clear_failure, record_failure
from metabn_bench.suite.records import save_record
from metabn_bench.training import distributed

Log = Callable[[str], None]
PLAN_FILE = "plan.json"
PLAN_SCHEMA = "metabn-bench suite plan v1"
WORKER_ENV = "METABN_BENCH_WORKER"  # set by launchers; recorded in running.json

DONE, BUSY, FAILED = "done", "busy", "failed"  # what run_job returns


class SuiteRunError(Exception):
    """Some jobs of a suite failed (their run directories hold failed.json); the CLI exits 1."""


@dataclass(frozen=True)
class Job:
    """One (method, seed) of a suite: its resolved training config and run directory."""

    method: str
    seed: int
    config: TrainConfig
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.method} seed {self.seed}"


@dataclass(frozen=True)
class SuitePlan:
    """Everything a process needs to run any job of the suite."""

    suite: SuiteConfig
    work_dir: Path
    set_dir: Path
    set_label: str  # the corrupted set as the user named it, and its size preset (provenance)
    data_source: str
    jobs: tuple[Job, ...]
    attempt: str  # this invocation; a job that failed in it is not retried by it
    results_dir: Path  # where the report goes (absolute; a SLURM report job writes there)
    # Whether finished runs are copied to <results>/run_records/ and earlier records skip jobs
    # (records.py). Off for the regression gate: a baseline must train every run itself and
    # leave nothing but its results in the checkout.
    records: bool = True

    @property
    def path(self) -> Path:
        return self.work_dir / PLAN_FILE


def plan_jobs(cfg: SuiteConfig, work_dir: Path, num_classes: int) -> tuple[Job, ...]:
    """Every (method, seed) of the suite, in preset order, with its resolved config."""
    from metabn_bench.training.loop import resolve_config

    jobs = []
    for method in cfg.methods:
        for seed in cfg.seeds_for(method):
            tcfg = replace(cfg.train, method=method, seed=seed,
                           hparams=dict(cfg.method_hparams.get(method, {})))
            tcfg = resolve_config(tcfg, num_classes)
            run_dir = runs.suite_run_dir(tcfg, work_dir.resolve())
            jobs.append(Job(method, seed, tcfg, run_dir))
    return tuple(jobs)


def make_plan(cfg: SuiteConfig, work_dir: Path, set_dir: Path, set_label: str, data_source: str,
              num_classes: int, results_dir: Path, records: bool = True) -> SuitePlan:
    """Plan the suite and write plan.json (atomically) into the work directory.

    Paths in plan.json are relative to the work directory, so a work directory can be moved
    (or mounted elsewhere on a cluster node) and still be read.
    """
    work_dir = work_dir.resolve()
    set_dir = set_dir.resolve()
    if set_dir != work_dir / "corrupted":
        raise ValueError(f"the corrupted set must be {work_dir / 'corrupted'}, not {set_dir}")
    plan = SuitePlan(cfg, work_dir, set_dir, set_label, data_source,
                     plan_jobs(cfg, work_dir, num_classes), secrets.token_hex(6),
                     results_dir.resolve(), records)
    fsio.write_json(plan.path, {
        "schema": PLAN_SCHEMA, "suite": to_dict(cfg), "set_label": set_label,
        "data_source": data_source, "attempt": plan.attempt,
        "results_dir": str(plan.results_dir), "records": plan.records,
        "jobs": [{"method": j.method, "seed": j.seed,
                  "run_dir": j.run_dir.relative_to(work_dir).as_posix(),
                  "config": to_dict(j.config)} for j in plan.jobs],
    })
    return plan


def read_plan(path: str | Path) -> SuitePlan:
    """A plan written by make_plan (path of plan.json or of the work directory)."""
    path = Path(path).resolve()
    if path.is_dir():
        path = path / PLAN_FILE
    if not path.is_file():
        raise UserError(f"no suite plan at '{path}'; start the suite with metabn-bench run first")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        data = {}
    if data.get("schema") != PLAN_SCHEMA:
        raise UserError(f"'{path}' is not a {PLAN_SCHEMA} file")
    work = path.parent
    jobs = tuple(Job(j["method"], int(j["seed"]), from_dict(TrainConfig, j["config"]),
                     work / j["run_dir"]) for j in data["jobs"])
    return SuitePlan(from_dict(SuiteConfig, data["suite"]), work, work / "corrupted",
                     data["set_label"], data["data_source"], jobs, data["attempt"],
                     Path(data["results_dir"]), bool(data.get("records", True)))


def train_set_loader(plan: SuitePlan) -> Callable[[], ArraySet]:
    """A function that loads the suite's training split on first use and then reuses it."""
    cache: list[ArraySet] = []

    def get() -> ArraySet:
        if not cache:
            from metabn_bench.data.specs import load_split

            data = plan.suite.train.data
            cache.append(load_split(data.dataset, "train", data.data_root, data.train_size,
                                    data.label))
        return cache[0]

    return get


def run_job(plan: SuitePlan, job: Job, train_set: Callable[[], ArraySet], progress: bool = True,
            log: Log = lambda _msg: None) -> str:
    """Train and evaluate one job under its run lock: DONE, BUSY (locked elsewhere) or FAILED.

    An exception from training or evaluation is recorded in the run's failed.json and FAILED is
    returned, so the other jobs go on; a UserError (bad input, the same for every job) is
    recorded and raised. KeyboardInterrupt releases the lock and propagates. Under
    torch.distributed every rank calls this: rank 0 takes the lock and writes the files, all
    ranks train, rank 0 evaluates.
    """
    from metabn_bench.evaluation.evaluate import evaluate
    from metabn_bench.training.loop import train

    main = distributed.is_main()
    lock = RunLock(job.run_dir, stage="train", job=job.label, attempt=plan.attempt,
                   worker=os.environ.get(WORKER_ENV, ""), world_size=distributed.world_size())
    if not distributed.agree(lock.acquire() if main else True):
        lock.release()
        return BUSY
    stage = "train"
    try:
        if main:
            clear_failure(job.run_dir)
        if not runs.is_finished(job.run_dir):  # no need to load the data otherwise
            info = train(job.config, job.run_dir, progress=progress and main,
                         train_set=train_set())
            log(f"{'resumed and trained' if info.resumed_from else 'trained'}: {job.label} "
                f"-> {job.run_dir}")
        if main:
            stage = "evaluate"
            lock.update(stage=stage)
            ev = plan.suite.eval
            evaluate(job.run_dir, plan.set_dir, ev.protocols, ev.batch_size, ev.extras,
                     job.config.device, verify=False, progress=progress)
            if plan.records:
                stage = "record"
                save_record(job.run_dir, plan.results_dir)  # the small files, to commit
        return DONE
    except UserError as exc:
        if main:
            record_failure(job.run_dir, stage, exc, attempt=plan.attempt)
        raise
    except Exception as exc:
        if main:
            record_failure(job.run_dir, stage, exc, attempt=plan.attempt)
        log(f"FAILED ({stage}): {job.label}: {type(exc).__name__}: {exc}")
        return FAILED
    finally:
        lock.release()


def describe_failures(failures: list[tuple[Job, dict[str, Any] | None]]) -> str:
    """A message naming each failed job, its stage and error, and where the traceback is."""
    lines = [f"{len(failures)} run(s) failed (tracebacks in each run's failed.json; "
             "metabn-bench status lists them; run the suite again to retry):"]
    for job, rec in failures:
        rec = rec or {}
        lines.append(f"  {job.label} [{rec.get('stage', '?')}]: {rec.get('error', '?')}: "
                     f"{rec.get('message', '')} ({job.run_dir})")
    return "\n".join(lines)
