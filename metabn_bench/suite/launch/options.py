"""`--launch key=value` options of the launchers (a module of their own, so that the launchers
import them without importing the launcher registry that imports the launchers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metabn_bench.config import from_dict, parse_overrides


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
