"""Run records: the small outputs of each finished run, kept beside the suite's results.

A finished job's config.json, env.json, metrics.jsonl, `done`, eval.jsonl and per_image.npz
(never checkpoints or weights, never data) are copied to
`<results>/run_records/<method>-s<seed>-<hash>/`. Committed with the results, they let a suite
skip a run finished earlier or on another machine (status.is_complete counts a complete
record as done), and `metabn-bench report <results>/run_records` rebuilds every table, the
train-cost column included, from these files alone.

A record stands for a job only when its config has the job's identity (config.identity: the
same hash as the run directory's name) and, for the suite to skip it, when its eval.jsonl
covers every cell of every protocol on the suite's corrupted set (status.py checks that).
A suite run with `records=False` (the regression gate's) neither writes nor reads them.
"""

from __future__ import annotations

from pathlib import Path

from metabn_bench import fsio
from metabn_bench.config import TrainConfig, identity
from metabn_bench.errors import UserError
from metabn_bench.runs import CONFIG, DONE, ENV, EVAL_FILE, METRICS, PER_IMAGE_FILE, load_config

RECORDS_DIR = "run_records"
# What a record holds, `done` last: a record is read as finished only once the rest is there.
RECORD_FILES = (CONFIG, ENV, METRICS, EVAL_FILE, PER_IMAGE_FILE, DONE)
PREREQUISITE_FILES = (CONFIG, ENV, METRICS, DONE)  # a run trained inside it: for its cost


def record_dir(results_dir: str | Path, run_dir: str | Path) -> Path:
    """Where the record of `run_dir` goes under a results directory."""
    return Path(results_dir) / RECORDS_DIR / Path(run_dir).name


def _copy(src: Path, dest: Path, names: tuple[str, ...]) -> None:
    fsio.ensure_dir(dest, "run record directory")
    for name in names:
        if (src / name).is_file():
            fsio.write_bytes(dest / name, (src / name).read_bytes())


def save_record(run_dir: str | Path, results_dir: str | Path) -> Path:
    """Copy a finished run's small outputs (and a prerequisite run's training record) into
    its record directory under `results_dir`; each file atomically, `done` last."""
    src = Path(run_dir)
    dest = record_dir(results_dir, src)
    for sub in sorted(p for p in src.iterdir() if p.is_dir() and (p / CONFIG).is_file()):
        _copy(sub, dest / sub.name, PREREQUISITE_FILES)
    _copy(src, dest, RECORD_FILES)
    return dest


def record_matches(dest: Path, cfg: TrainConfig) -> bool:
    """Whether `dest` is a finished record of a run with `cfg`'s identity (evaluated or not)."""
    if not ((dest / DONE).is_file() and (dest / EVAL_FILE).is_file()):
        return False
    try:
        return identity(load_config(dest)) == identity(cfg)
    except UserError:
        return False  # an unreadable config is no record of this job
