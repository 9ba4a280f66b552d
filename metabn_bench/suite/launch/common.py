"""What every launcher shares: the loop that works through a plan, and the final check."""

from __future__ import annotations

import time
from collections.abc import Callable

from metabn_bench.runlock import holder, read_failure
from metabn_bench.suite.jobs import (
    BUSY,
    Job,
    Log,
    SuitePlan,
    SuiteRunError,
    describe_failures,
    run_job,
    train_set_loader,
)
from metabn_bench.suite.status import is_complete


def failed_now(plan: SuitePlan, job: Job) -> bool:
    """Whether the job failed during this invocation (it is then not retried by it)."""
    rec = read_failure(job.run_dir)
    return rec is not None and rec.get("attempt") == plan.attempt


def pending(plan: SuitePlan) -> list[Job]:
    """Jobs that are neither complete nor failed in this invocation."""
    return [j for j in plan.jobs if not is_complete(plan, j) and not failed_now(plan, j)]


def work_through(plan: SuitePlan, progress: bool, log: Log, poll_s: float,
                 stop: Callable[[], bool] = lambda: False) -> None:
    """Run pending jobs in plan order until none is left.

    A job whose run another process holds (a second suite, another worker) is passed over and
    looked at again every `poll_s` seconds, so this returns only when every job is complete or
    has failed; several processes running this loop share the jobs between them.
    """
    train_set = train_set_loader(plan)
    told: set[str] = set()
    while todo := pending(plan):
        ran = False
        for job in todo:
            if stop():
                return
            other = holder(job.run_dir)
            if other is None and run_job(plan, job, train_set, progress, log) != BUSY:
                ran = True
                continue
            if str(job.run_dir) not in told:
                told.add(str(job.run_dir))
                who = other or {}
                log(f"waiting: {job.label} is being worked on by pid {who.get('pid')} on "
                    f"{who.get('host')}")
        if not ran:
            time.sleep(poll_s)


def finish(plan: SuitePlan) -> bool:
    """True when every job is complete; SuiteRunError naming the failed or unfinished ones."""
    failures = [(j, read_failure(j.run_dir)) for j in plan.jobs if read_failure(j.run_dir)]
    if failures:
        raise SuiteRunError(describe_failures(failures))
    unfinished = [j for j in plan.jobs if not is_complete(plan, j)]
    if unfinished:
        names = ", ".join(j.label for j in unfinished)
        raise SuiteRunError(f"{len(unfinished)} run(s) did not finish: {names}; see the logs "
                            f"under {plan.work_dir} and metabn-bench status")
    return True
