"""`--launcher slurm`: one SLURM job per (method, seed) through submitit, then the report.

The jobs are one job array (`array_parallelism` at most running at once). Each job runs
`run_one` on a compute node: it trains and evaluates its (method, seed) from plan.json under
the run's lock. With several tasks per job (`tasks_per_job`, by default one per GPU) the tasks
form a torch.distributed group (submitit's TorchDistributedEnvironment) and train the run
together. By default this process waits, showing progress, and writes the report; with
`wait=false` it submits a report job that starts after the array ends and returns at once.
`executor=local` (or `debug`) runs the same jobs on this machine through submitit, which is how
this launcher is tested where no SLURM cluster exists.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tqdm import tqdm

from metabn_bench import fsio
from metabn_bench.errors import UserError
from metabn_bench.suite.jobs import Log, SuitePlan
from metabn_bench.suite.launch import LaunchOptions
from metabn_bench.suite.launch.common import finish
from metabn_bench.suite.status import is_complete

EXECUTORS = ("slurm", "local", "debug")


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("the slurm launcher needs submitit: pip install 'metabn-bench[cluster]'") from None
    return submitit


def make_executor(plan: SuitePlan, opts: LaunchOptions, name: str = "") -> Any:
    """A submitit executor for the suite's jobs, with the options translated to sbatch's."""
    submitit = _submitit()
    if opts.executor not in EXECUTORS:
        raise UserError(f"unknown executor '{opts.executor}'; valid: {', '.join(EXECUTORS)}")
    folder = plan.work_dir / "slurm" / "%j"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=opts.executor)
    except RuntimeError as exc:  # no sbatch/srun on this machine
        raise UserError(f"cannot submit to SLURM here ({exc}); run on a SLURM login node, or "
                        "use --launch executor=local to run the jobs on this machine") from None
    tasks = opts.tasks_per_job or max(1, opts.gpus_per_job)
    params: dict[str, Any] = {
        "name": name or f"metabn-{plan.suite.name}", "timeout_min": opts.time_min,
        "tasks_per_node": tasks, "cpus_per_task": opts.cpus_per_task, "mem_gb": opts.mem_gb,
        "slurm_array_parallelism": opts.array_parallelism,
    }
    if opts.gpus_per_job > 0:
        params["gpus_per_node"] = opts.gpus_per_job
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.account:
        params["slurm_account"] = opts.account
    if opts.slurm_args:
        params["slurm_additional_parameters"] = dict(opts.slurm_args)
    if opts.executor != "slurm":  # local/debug know only the generic keys
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    executor.update_parameters(**params)
    return executor


def run_one(plan_path: str, index: int, sync_bn: bool = True) -> str:
    """The body of one SLURM job: job `index` of the plan, on every task of the job."""
    import submitit

    from metabn_bench.suite.jobs import FAILED, read_plan, run_job, train_set_loader
    from metabn_bench.training import distributed

    plan = read_plan(plan_path)
    job = plan.jobs[index]
    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    distributed.init_from_env(job.config.device, sync_bn)
    try:
        outcome = run_job(plan, job, train_set_loader(plan), progress=False, log=print)
    finally:
        distributed.shutdown()
    if outcome == FAILED:
        raise RuntimeError(f"{job.label} failed; see {job.run_dir / 'failed.json'}")
    return outcome


def report_one(plan_path: str) -> str:
    """The body of the report job: write the results directory from the finished runs."""
    from metabn_bench.suite.jobs import read_plan
    from metabn_bench.suite.runner import report_suite

    plan = read_plan(plan_path)
    finish(plan)
    report_suite(plan, plan.results_dir)
    return str(plan.results_dir)


def submit(plan: SuitePlan, opts: LaunchOptions, progress: bool, log: Log) -> bool:
    """Submit the unfinished jobs; wait and return True, or (wait=false) return False."""
    if not opts.wait and opts.executor != "slurm":
        raise UserError("--launch wait=false needs the slurm executor (a report job that "
                        "depends on the others); drop it to wait here")
    todo = [i for i, j in enumerate(plan.jobs) if not is_complete(plan, j)]
    if not todo:
        return finish(plan)
    executor = make_executor(plan, opts)
    with executor.batch():
        jobs = [executor.submit(run_one, str(plan.path), i, opts.sync_bn) for i in todo]
    ids = [j.job_id for j in jobs]
    fsio.write_json(plan.work_dir / "slurm" / "submitted.json",
                    {"attempt": plan.attempt, "jobs": {plan.jobs[i].label: jid
                                                       for i, jid in zip(todo, ids)}})
    log(f"submitted {len(jobs)} job(s) ({', '.join(ids)}); logs under {plan.work_dir / 'slurm'}")
    if not opts.wait:
        arrays = sorted({jid.split("_")[0] for jid in ids})
        after = {**dict(opts.slurm_args), "dependency": "afterany:" + ":".join(arrays)}
        reporter = make_executor(plan, dataclasses.replace(
            opts, gpus_per_job=0, tasks_per_job=1, cpus_per_task=2, time_min=60,
            slurm_args=after), name=f"metabn-{plan.suite.name}-report")
        report = reporter.submit(report_one, str(plan.path))
        log(f"report job {report.job_id} writes {plan.results_dir} after them; "
            "metabn-bench status shows progress")
        return False
    _wait(jobs, [plan.jobs[i] for i in todo], plan, progress, log, opts.poll_s)
    return finish(plan)


def _wait(jobs: list[Any], planned: list[Any], plan: SuitePlan, progress: bool, log: Log,
          poll_s: float) -> None:
    bar = tqdm(total=len(jobs), unit="job", desc=f"{plan.suite.name} jobs",
               disable=not progress, dynamic_ncols=True)
    try:
        while (n := sum(j.done() for j in jobs)) < len(jobs):
            bar.update(n - bar.n)
            time.sleep(poll_s)
        bar.update(len(jobs) - bar.n)
    except KeyboardInterrupt:
        log(f"stopped waiting; the jobs keep running on the cluster (scancel "
            f"{' '.join(j.job_id for j in jobs)} to stop them); run the same command again to "
            "collect them")
        raise
    finally:
        bar.close()
    for job, planned_job in zip(jobs, planned):
        exc = job.exception()
        if exc is not None:
            log(f"job {job.job_id} ({planned_job.label}) ended with an error: "
                f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}")
