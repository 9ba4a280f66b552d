"""`--launcher gpus`: one worker process per GPU, each pulling (method, seed) jobs.

Workers are `python -m metabn_bench.suite.launch.worker PLAN`, each with its own
CUDA_VISIBLE_DEVICES, so that every worker sees one GPU as cuda:0. They share the jobs through
the run locks (a worker takes the next job nobody holds), so no job runs twice and a worker
that finishes early takes the next job. Their output goes to <work>/logs/worker-<k>.log.
On a machine without GPUs, `workers=N` runs N CPU workers (each with cores/N threads unless
OMP_NUM_THREADS is set); that is how this launcher is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import metabn_bench
from metabn_bench.errors import UserError
from metabn_bench.suite.jobs import WORKER_ENV, Log, SuitePlan
from metabn_bench.suite.launch import LaunchOptions
from metabn_bench.suite.launch.common import finish
from metabn_bench.suite.status import is_complete


def worker_slots(opts: LaunchOptions, device: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each worker ('' = a CPU worker)."""
    cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda") and not cuda:
        raise UserError(f"device '{device}' requested but CUDA is not available; use auto or cpu")
    if not cuda:
        if opts.gpus:
            raise UserError(f"--launch gpus={list(opts.gpus)} given but no CUDA device is visible")
        if opts.workers <= 0:
            raise UserError("the gpus launcher found no CUDA device; pass --launch workers=N to "
                            "run N worker processes on the CPU, or use --launcher local")
        return [""] * opts.workers
    count = torch.cuda.device_count()
    gpus = list(opts.gpus) or list(range(count))
    bad = [g for g in gpus if not 0 <= g < count]
    if bad:
        raise UserError(f"GPU indices {bad} do not exist; visible GPUs: 0..{count - 1}")
    n = opts.workers or len(gpus)
    return [str(gpus[k % len(gpus)]) for k in range(n)]


def _worker_env(k: int, slot: str, n_workers: int) -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(metabn_bench.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["CUDA_VISIBLE_DEVICES"] = slot
    env[WORKER_ENV] = f"worker-{k}"
    if not slot and "OMP_NUM_THREADS" not in env:  # CPU workers share the cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_workers))
    return env


def _stop(procs: list[subprocess.Popen], grace_s: float = 30.0) -> None:
    """Interrupt the workers (they release their locks), then kill what is left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_workers(plan: SuitePlan, opts: LaunchOptions, progress: bool, log: Log) -> bool:
    """Start one worker per slot, show progress until they exit, then check the suite."""
    slots = worker_slots(opts, plan.suite.train.device)
    done = sum(is_complete(plan, j) for j in plan.jobs)
    if done == len(plan.jobs):
        return finish(plan)
    logs = plan.work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for k, slot in enumerate(slots):
        out = open(logs / f"worker-{k}.log", "a")  # noqa: SIM115 - the child writes into it
        cmd = [sys.executable, "-m", "metabn_bench.suite.launch.worker", str(plan.path),
               "--poll", str(opts.poll_s)]
        procs.append(subprocess.Popen(cmd, env=_worker_env(k, slot, len(slots)), stdout=out,
                                      stderr=subprocess.STDOUT))
        out.close()
        log(f"worker {k} (pid {procs[-1].pid}) on {'GPU ' + slot if slot else 'the CPU'}; "
            f"log {logs / f'worker-{k}.log'}")
    bar = tqdm(total=len(plan.jobs), initial=done, unit="run", desc=f"{plan.suite.name} runs",
               disable=not progress, dynamic_ncols=True)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.5)
            now = sum(is_complete(plan, j) for j in plan.jobs)
            bar.update(now - bar.n)
    except BaseException:
        _stop(procs)
        raise
    finally:
        bar.close()
    for k, p in enumerate(procs):
        if p.returncode != 0:
            log(f"worker {k} exited with code {p.returncode}; see {logs / f'worker-{k}.log'}")
    return finish(plan)
