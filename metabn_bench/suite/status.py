"""`status`: what a suite has done, what is running, what failed and what is missing.

Everything is read from the work directory, never from the processes: the corrupted set's
manifest, each run directory's metrics.jsonl, `done`, eval.jsonl, failed.json and its lock
(runlock.py). A run is
- running: a live process holds its lock (pid, host and stage are shown);
- failed: its last attempt raised (the error is shown; failed.json holds the traceback);
- done: trained, and every cell evaluated under every protocol of the preset, in the work
  directory or in a committed run record under the results directory (records.py; the
  `from` column says which, and a record's note when and where it was trained);
- interrupted: started but not finished, and nobody is working on it (a re-run resumes it);
- missing: not started.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from metabn_bench import fsio
from metabn_bench.config import SuiteConfig, to_dict
from metabn_bench.config_checks import check_suite_config
from metabn_bench.errors import UserError
from metabn_bench.reporting.costs import read_training_cost
from metabn_bench.runlock import holder, read_failure
from metabn_bench.runs import CONFIG, DONE, ENV, EVAL_FILE, METRICS
from metabn_bench.suite.jobs import PLAN_FILE, Job, SuitePlan, plan_jobs, read_plan
from metabn_bench.suite.records import RECORDS_DIR, record_dir, record_matches

STATES = ("done", "running", "failed", "interrupted", "missing")


@dataclass
class SetState:
    """The corrupted set: missing, partial or complete, and its id (matches eval rows)."""

    state: str
    done: list[str]
    expected: list[str]
    set_id: str | None


@dataclass
class JobState:
    """One (method, seed): its state, training and evaluation progress, holder, failure."""

    job: Job
    state: str
    epochs_done: int
    evals: dict[str, tuple[int, int]] = field(default_factory=dict)  # protocol -> (done, total)
    holder: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    source: str = ""  # where a done run's results are: 'work' or 'record' (results/run_records)
    train_seconds: float | None = None  # recorded training wall time of a done run
    origin: str = ""  # a committed record's env.json: when, at which commit, on what device


def _expected_corruptions(cfg: SuiteConfig) -> list[str]:
    from metabn_bench.corruptions.generate import resolve_names

    return resolve_names(cfg.corrupt)


def expected_cells(cfg: SuiteConfig) -> list[tuple[str, int]]:
    """('clean', 0) then every (corruption, severity) the suite evaluates, as evaluate() does."""
    from metabn_bench.corruptions import names as cnames

    names = [c for c in _expected_corruptions(cfg) if cfg.eval.extras or c not in cnames.EXTRA]
    severities = sorted(set(cfg.corrupt.severities))
    return [("clean", 0)] + [(c, s) for c in names for s in severities]


def set_state(cfg: SuiteConfig, set_dir: Path) -> SetState:
    """How far the corrupted set under `set_dir` is (from its manifest)."""
    from metabn_bench.data.store import MANIFEST

    expected = _expected_corruptions(cfg)
    path = set_dir / MANIFEST
    if not path.is_file():
        return SetState("missing", [], expected, None)
    manifest = json.loads(path.read_text())
    files = manifest.get("files", {})
    done = [c for c in expected if files.get(c, {}).get("kind") == "corruption"]
    state = "complete" if len(done) == len(expected) else "partial"
    return SetState(state, done, expected, manifest.get("set_id"))


def eval_counts(run_dir: Path, cfg: SuiteConfig, set_id: str | None) -> dict[str, tuple[int, int]]:
    """protocol -> (cells evaluated, cells expected) for one run directory."""
    from metabn_bench.evaluation.protocols import PROTOCOLS, parse_protocol

    cells = set(expected_cells(cfg))
    rows = fsio.read_jsonl(run_dir / EVAL_FILE) if set_id else []
    out = {}
    for spec in cfg.eval.protocols:
        bs = cfg.eval.batch_size or PROTOCOLS.get(parse_protocol(spec)[0]).default_batch_size
        done = {(r["corruption"], int(r["severity"])) for r in rows
                if r["set_id"] == set_id and r["protocol"] == spec
                and int(r["test_batch_size"]) == bs}
        out[spec] = (len(done & cells), len(cells))
    return out


def record_complete(cfg: SuiteConfig, dest: Path, job: Job, set_id: str | None) -> bool:
    """Whether the committed record `dest` stands for `job` and covers every cell of every
    protocol on the corrupted set `set_id`."""
    return record_matches(dest, job.config) and all(
        d == t for d, t in eval_counts(dest, cfg, set_id).values())


def _record_set_id(dest: Path) -> str | None:
    """The corrupted set a record was evaluated on (when the set is not made here yet)."""
    rows = fsio.read_jsonl(dest / EVAL_FILE) if (dest / EVAL_FILE).is_file() else []
    ids = {r.get("set_id") for r in rows}
    return next(iter(ids)) if len(ids) == 1 else None


def _origin(dest: Path) -> str:
    """'trained 2026-11-24T04:07:00+00:00 at commit f883c37 on cpu (x86_64)' from env.json."""
    try:
        env = json.loads((dest / ENV).read_text())
        device = env.get("device", {})
        return (f"trained {env.get('time', '?')} at commit {env.get('commit', '?')} on "
                f"{device.get('type', '?')} ({device.get('name', '?')})")
    except (OSError, ValueError, AttributeError):
        return "no readable env.json"


def _wall_seconds(run_dir: Path) -> float | None:
    cost = read_training_cost(run_dir) if (run_dir / CONFIG).is_file() else None
    return cost.wall_seconds if cost is not None else None


def job_state(job: Job, cfg: SuiteConfig, set_id: str | None,
              results_dir: Path | None = None) -> JobState:
    """The state of one job, read from its run directory or its committed record."""
    run_dir = job.run_dir
    if results_dir is not None and not (run_dir / DONE).exists():
        dest = record_dir(results_dir, run_dir)
        if record_complete(cfg, dest, job, set_id or _record_set_id(dest)):
            return JobState(job, "done", job.config.epochs,
                            eval_counts(dest, cfg, set_id or _record_set_id(dest)),
                            source="record", train_seconds=_wall_seconds(dest),
                            origin=_origin(dest))
    epochs = len(fsio.read_jsonl(run_dir / METRICS))
    trained = (run_dir / DONE).exists()
    evals = eval_counts(run_dir, cfg, set_id)
    live = holder(run_dir)
    failure = read_failure(run_dir)
    if live is not None:
        state = "running"
    elif failure is not None:
        state = "failed"
    elif trained and all(d == t for d, t in evals.values()):
        state = "done"
    elif (run_dir / CONFIG).exists():
        state = "interrupted"
    else:
        state = "missing"
    return JobState(job, state, job.config.epochs if trained else epochs, evals, live, failure,
                    source="work" if state == "done" else "",
                    train_seconds=_wall_seconds(run_dir) if state == "done" else None)


def is_complete(plan: SuitePlan, job: Job) -> bool:
    """Trained and evaluated on every cell of every protocol (the set must be complete), in
    the work directory or, when the plan uses records, in a committed record under the
    results directory."""
    set_id = set_state(plan.suite, plan.set_dir).set_id
    if (job.run_dir / DONE).exists() and all(
            d == t for d, t in eval_counts(job.run_dir, plan.suite, set_id).values()):
        return True
    return plan.records and record_complete(plan.suite, record_dir(plan.results_dir, job.run_dir),
                                            job, set_id)


@dataclass
class SuiteStatus:
    """The whole suite: its corrupted set, its jobs and whether results were written."""

    name: str
    work_dir: Path
    corrupted: SetState
    jobs: list[JobState]
    results: Path | None
    results_root: Path = Path("results")  # the results directory, written or not


def _jobs_for(cfg: SuiteConfig, work_dir: Path) -> tuple[Job, ...]:
    """The jobs from plan.json when it describes this very config, else planned afresh."""
    path = work_dir / PLAN_FILE
    if path.is_file():
        plan = read_plan(path)
        if to_dict(plan.suite) == to_dict(cfg):
            return plan.jobs
    from metabn_bench.data.specs import load_split

    data = cfg.train.data
    test = load_split(data.dataset, "test", data.data_root, cfg.corrupt.n_test, data.label)
    return plan_jobs(cfg, work_dir, len(test.classes))


def suite_status(cfg: SuiteConfig, work_dir: str | Path | None = None,
                 results_dir: str | Path | None = None) -> SuiteStatus:
    """Read the state of every part of the suite described by `cfg`."""
    check_suite_config(cfg)  # a bad preset is one line here too, not a plan of wrong jobs
    work = Path(work_dir or Path("runs") / cfg.name)
    if work.exists() and not work.is_dir():
        raise UserError(f"work directory '{work}' is not a directory")
    corrupted = set_state(cfg, work / "corrupted")
    results = Path(results_dir or Path("results") / cfg.name)
    jobs = [job_state(j, cfg, corrupted.set_id, results) for j in _jobs_for(cfg, work)]
    return SuiteStatus(cfg.name, work, corrupted, jobs,
                       results if (results / "summary.json").is_file() else None, results)


def _who(state: JobState) -> str:
    if state.holder is not None:
        h = state.holder
        return f"{h.get('stage', '?')} by pid {h.get('pid')} on {h.get('host')} since {h.get('since', '?')}"
    if state.failure is not None:
        f = state.failure
        return f"{f.get('stage', '?')}: {f.get('error', '?')}: {f.get('message', '')}"[:120]
    return ""


def status_table(status: SuiteStatus) -> pd.DataFrame:
    """One line per (method, seed): state, epochs, cells evaluated per protocol, note, run."""
    lines = []
    for s in status.jobs:
        line = {"method": s.job.method, "seed": s.job.seed, "state": s.state,
                "epochs": f"{s.epochs_done}/{s.job.config.epochs}"}
        for spec, (done, total) in s.evals.items():
            line[f"eval {spec}"] = f"{done}/{total}"
        line["from"] = {"work": "work directory", "record": "committed record"}.get(s.source, "—")
        line["note"] = _who(s) or s.origin
        line["run"] = s.job.run_dir.name
        lines.append(line)
    return pd.DataFrame(lines)


def status_summary(status: SuiteStatus) -> list[str]:
    """Lines above the table: the corrupted set, the counts per state, the results."""
    c = status.corrupted
    counts = {k: sum(s.state == k for s in status.jobs) for k in STATES}
    set_line = (f"corrupted set: {c.state} ({len(c.done)}/{len(c.expected)} corruptions"
                f"{', id ' + c.set_id if c.set_id else ''}) in {status.work_dir / 'corrupted'}")
    runs = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    results = (f"results: {status.results}/summary.json" if status.results
               else "results: not written yet")
    records = sum(s.source == "record" for s in status.jobs)
    return [f"suite {status.name} (work directory {status.work_dir})", set_line,
            f"runs: {len(status.jobs)} ({runs}); {records} done from committed records in "
            f"{status.results_root / RECORDS_DIR}", results, remaining(status)]


def remaining(status: SuiteStatus) -> str:
    """What is left, and its training time estimated from the done runs' recorded times
    (median wall seconds of the same method's done runs; methods with none are named)."""
    left = [s for s in status.jobs if s.state != "done"]
    if not left:
        return "left: nothing; every run is done"
    by_method: dict[str, list[float]] = {}
    for s in status.jobs:
        if s.train_seconds is not None:
            by_method.setdefault(s.job.method, []).append(s.train_seconds)
    known = [statistics.median(by_method[s.job.method]) for s in left if s.job.method in by_method]
    unknown = sorted({s.job.method for s in left if s.job.method not in by_method})
    names = ", ".join(f"{s.job.method} s{s.job.seed}" for s in left)
    estimate = (f"about {sum(known) / 3600:.1f} h of training (wall clock, median of the same "
                f"method's done runs) for {len(known)} of them" if known else "no estimate")
    if unknown:
        estimate += f"; no done run to estimate {', '.join(unknown)}"
    return f"left: {len(left)} run(s) ({names}); {estimate}"
