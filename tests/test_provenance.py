"""The commit in every result's provenance, also for a copy of the code without .git."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from metabn_bench import provenance
from tests.suite_helpers import ROOT

PRINT_COMMIT = "from metabn_bench import provenance; print(provenance.commit())"


def _commit_of_copy(tmp_path: Path, env_commit: str | None) -> str:
    copy = tmp_path / "snapshot"  # like `git archive HEAD | tar -x`: the package, no .git
    shutil.copytree(ROOT / "metabn_bench", copy / "metabn_bench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != provenance.COMMIT_ENV}
    env["PYTHONPATH"] = str(copy)
    env["GIT_CEILING_DIRECTORIES"] = str(tmp_path)  # no git repository above the copy either
    if env_commit is not None:
        env[provenance.COMMIT_ENV] = env_commit
    done = subprocess.run([sys.executable, "-c", PRINT_COMMIT], cwd=copy, env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_copy_without_git_records_the_commit_it_was_named(tmp_path: Path) -> None:
    assert _commit_of_copy(tmp_path, "0f559e97db5a") == \
        "0f559e97db5a (from METABN_BENCH_COMMIT)"


def test_a_copy_without_git_and_without_a_name_says_unknown(tmp_path: Path) -> None:
    assert _commit_of_copy(tmp_path, None) == "unknown"
