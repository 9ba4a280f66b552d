"""Where a suite's jobs run: `--launcher local | gpus | slurm`.

- local: one process, one job after another (the default).
- gpus: one worker process per GPU of this machine, each pulling (method, seed) jobs until none
  is left (CUDA_VISIBLE_DEVICES per worker); on a machine without GPUs, `workers=N` CPU workers.
- slurm: one SLURM job per (method, seed) through submitit, then the report; a job with several
  tasks trains its run with torch.distributed (one task per GPU).

Every launcher runs jobs through jobs.run_job, so locks, resume and failure records behave the
same everywhere; a launcher returns True when every job is finished (the report can be written
now) and False when it only submitted them (the report is written by a later job).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metabn_bench.config import from_dict, parse_overrides
from metabn_bench.registry import Registry
from metabn_bench.suite.jobs import Log, SuitePlan


@dataclass(frozen=True)
class LaunchOptions:
    """`--launch key=value` options; the comment of each says which launcher reads it."""

    poll_s: float = 5.0  # all: seconds between looks at runs that another process holds
    gpus: tuple[int, ...] = ()  # gpus: GPU indices to use (default: every visible GPU)
    workers: int = 0  # gpus: worker processes (default: one per GPU; without GPUs: required, CPU)
    executor: str = "slurm"  # slurm: submitit executor: slurm, or local / debug (this machine)
    partition: str = ""  # slurm: partition (default: the cluster's)
    account: str = ""  # slurm: account to charge (default: the user's)
    time_min: int = 720  # slurm: wall-clock limit of each job (minutes)
    gpus_per_job: int = 1  # slurm: GPUs per (method, seed) job
    tasks_per_job: int = 0  # slurm: processes per job, one per GPU when 0; >1 = torch.distributed
    cpus_per_task: int = 8  # slurm
    mem_gb: int = 32  # slurm: memory per job
    array_parallelism: int = 64  # slurm: most jobs of the suite running at once
    slurm_args: Mapping[str, Any] = field(default_factory=dict)  # slurm: more sbatch options
    wait: bool = True  # slurm: wait and report here; false: a report job runs after the others
    sync_bn: bool = True  # slurm, several tasks: BatchNorm statistics over all ranks


def parse_launch_options(items: Iterable[str]) -> LaunchOptions:
    """LaunchOptions from `key=value` strings (values are YAML); unknown keys are UserErrors."""
    return from_dict(LaunchOptions, parse_overrides(items), "launch")


LaunchFn = Callable[[SuitePlan, LaunchOptions, bool, Log], bool]
LAUNCHERS: Registry[LaunchFn] = Registry("launcher")


@LAUNCHERS.register("local")
def _local(plan: SuitePlan, opts: LaunchOptions, progress: bool, log: Log) -> bool:
    """This process, one job after another."""
    from metabn_bench.suite.launch.common import finish, work_through

    work_through(plan, progress, log, opts.poll_s)
    return finish(plan)


@LAUNCHERS.register("gpus")
def _gpus(plan: SuitePlan, opts: LaunchOptions, progress: bool, log: Log) -> bool:
    """One worker process per GPU of this machine, each pulling jobs until none is left."""
    from metabn_bench.suite.launch.gpus import run_workers

    return run_workers(plan, opts, progress, log)


@LAUNCHERS.register("slurm")
def _slurm(plan: SuitePlan, opts: LaunchOptions, progress: bool, log: Log) -> bool:
    """One SLURM job per (method, seed) through submitit, then the report."""
    from metabn_bench.suite.launch.slurm import submit

    return submit(plan, opts, progress, log)
