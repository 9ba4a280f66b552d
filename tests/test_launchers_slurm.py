"""The slurm launcher. No SLURM cluster exists here, so it is tested two ways:
- the jobs run for real through submitit's local executor (the same job function, pickled and
  run in fresh processes), with 2 tasks per job forming a gloo group (DDP inside a job);
- submission to SLURM goes through submitit's real SlurmExecutor up to `sbatch`, which is a
  fake here that records the batch scripts, so that the translated options (partition, time,
  GPUs, tasks, account, extra options, the report job's dependency) can be read back.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from metabn_bench.config import load_preset
from metabn_bench.errors import UserError
from metabn_bench.suite.launch import LaunchOptions
from metabn_bench.suite.launch.slurm import make_executor, report_one
from metabn_bench.suite.runner import run_suite
from tests.suite_helpers import ROOT, TINY_SUITE, OneThread, write_preset


def test_slurm_jobs_with_two_tasks_train_with_torch_distributed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the job processes import this checkout
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    preset = write_preset(tmp_path, seeds=[0], train={**TINY_SUITE["train"], "epochs": 1})
    opts = LaunchOptions(executor="local", tasks_per_job=2, gpus_per_job=0, time_min=10,
                         poll_s=0.2)
    with OneThread():
        result = run_suite(load_preset(str(preset)), tmp_path / "results", tmp_path / "work",
                           progress=False, launcher="slurm", launch=opts)
    assert result.report is not None and result.report["rows"][0]["n_seeds"] == 1
    (run,) = (tmp_path / "work" / "train").iterdir()
    env = json.loads((run / "env.json").read_text())
    assert env["distributed"]["world_size"] == 2 and env["distributed"]["backend"] == "gloo"
    submitted = json.loads((tmp_path / "work" / "slurm" / "submitted.json").read_text())
    assert list(submitted["jobs"]) == ["vanilla seed 0"]
    # a second invocation finds everything done and submits nothing
    again = run_suite(load_preset(str(preset)), tmp_path / "results", tmp_path / "work",
                      progress=False, launcher="slurm", launch=opts)
    assert again.report is not None
    assert json.loads((tmp_path / "work" / "slurm" / "submitted.json").read_text()) == submitted
    # the body of the report job (wait=false) writes the results directory of the plan
    shutil.rmtree(tmp_path / "results")
    assert report_one(str(tmp_path / "work" / "plan.json")) == str(tmp_path / "results")
    assert (tmp_path / "results" / "summary.json").is_file()


FAKE_SBATCH = """#!/bin/sh
# A stand-in for sbatch: keeps the batch script, answers like sbatch.
n=$(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 4241); n=$((n + 1)); echo $n > "$FAKE_SLURM/counter"
for last; do :; done
cp "$last" "$FAKE_SLURM/job-$n.sh"
echo "Submitted batch job $n"
"""


def _fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(bin_dir))
    return bin_dir


def test_slurm_submission_without_waiting_queues_a_dependent_report_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_slurm(tmp_path, monkeypatch)
    opts = LaunchOptions(wait=False, partition="gpu", account="lab", time_min=90,
                         gpus_per_job=2, cpus_per_task=6, mem_gb=40,
                         slurm_args={"constraint": "h100"})
    with OneThread():
        result = run_suite(load_preset(str(write_preset(tmp_path))), tmp_path / "results",
                           tmp_path / "work", progress=False, launcher="slurm", launch=opts)
    assert result.report is None  # the report job writes it later
    array, report = (fake / "job-4242.sh").read_text(), (fake / "job-4243.sh").read_text()
    for line in ("--partition=gpu", "--account=lab", "--time=90", "--gpus-per-node=2",
                 "--ntasks-per-node=2", "--cpus-per-task=6", "--mem=40GB", "--constraint=h100",
                 "--array=0-1%2", "--job-name=metabn-tiny"):  # %: min(64, jobs)
        assert f"#SBATCH {line}\n" in array, line
    assert "#SBATCH --dependency=afterany:4242\n" in report
    assert "#SBATCH --ntasks-per-node=1\n" in report and "--gpus-per-node" not in report
    assert "#SBATCH --job-name=metabn-tiny-report\n" in report
    submitted = json.loads((tmp_path / "work" / "slurm" / "submitted.json").read_text())
    assert submitted["jobs"] == {"vanilla seed 0": "4242_0", "vanilla seed 1": "4242_1"}


def test_slurm_executor_needs_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no srun, no sbatch
    plan = SimpleNamespace(work_dir=tmp_path, suite=SimpleNamespace(name="tiny"))
    with pytest.raises(UserError, match="cannot submit to SLURM here .* executor=local"):
        make_executor(plan, LaunchOptions())
    with pytest.raises(UserError, match="unknown executor 'pbs'; valid: slurm, local, debug"):
        make_executor(plan, LaunchOptions(executor="pbs"))
