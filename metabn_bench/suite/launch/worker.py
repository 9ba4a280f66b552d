"""A worker of the `gpus` launcher: `python -m metabn_bench.suite.launch.worker PLAN [--poll S]`.

It runs jobs of the plan that no other process holds until none is left, then exits 0. It
stops (releasing its run's lock; the run resumes later) on SIGINT, on SIGTERM and when its
parent dies (Linux), so a killed suite does not leave workers behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
from datetime import datetime

from metabn_bench.errors import UserError
from metabn_bench.suite.jobs import WORKER_ENV, read_plan
from metabn_bench.suite.launch.common import work_through


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent process ends (PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Work through the plan; exit code 0 done, 2 bad input, 130 interrupted."""
    parser = argparse.ArgumentParser(prog="metabn_bench.suite.launch.worker")
    parser.add_argument("plan")
    parser.add_argument("--poll", type=float, default=5.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    _die_with_parent()
    name = os.environ.get(WORKER_ENV, "worker")

    def log(message: str) -> None:
        print(f"{datetime.now():%H:%M:%S} {name}: {message}", flush=True)

    try:
        plan = read_plan(args.plan)
        log(f"started (pid {os.getpid()}, CUDA_VISIBLE_DEVICES="
            f"'{os.environ.get('CUDA_VISIBLE_DEVICES', '')}')")
        work_through(plan, progress=False, log=log, poll_s=args.poll)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except UserError as exc:
        log(f"error: {exc}")
        return 2
    log("no job left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
