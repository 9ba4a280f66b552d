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

from collections.abc import Callable

from metabn_bench.registry import Registry
from metabn_bench.suite.jobs import Log, SuitePlan
from metabn_bench.suite.launch.options import LaunchOptions, parse_launch_options

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


__all__ = ["LAUNCHERS", "LaunchFn", "LaunchOptions", "parse_launch_options"]
