"""Seeds per method: a suite's `method_seeds` plans, checks and shows more seeds for some rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabn_bench.cli import app
from metabn_bench.config import SuiteConfig, from_dict, replace
from metabn_bench.config_checks import check_suite_config
from metabn_bench.errors import UserError
from metabn_bench.suite.jobs import plan_jobs
from metabn_bench.suite.status import status_table, suite_status
from tests.suite_helpers import TINY_SUITE, write_preset


def _cfg(**changes: object) -> SuiteConfig:
    return from_dict(SuiteConfig, {**TINY_SUITE, "methods": ["vanilla", "cutout"], **changes})


def test_method_seeds_plan_more_runs_for_the_named_methods(tmp_path: Path) -> None:
    cfg = _cfg(method_seeds={"vanilla": [0, 1, 2]})
    check_suite_config(cfg)
    assert cfg.seeds_for("vanilla") == (0, 1, 2) and cfg.seeds_for("cutout") == (0, 1)
    jobs = plan_jobs(cfg, tmp_path, 10)
    assert [(j.method, j.seed) for j in jobs] == [("vanilla", 0), ("vanilla", 1), ("vanilla", 2),
                                                  ("cutout", 0), ("cutout", 1)]
    assert len({j.run_dir for j in jobs}) == 5
    state = suite_status(cfg, tmp_path / "work", tmp_path / "results")
    table = status_table(state)
    assert list(zip(table["method"], table["seed"])) == [(j.method, j.seed) for j in jobs]
    assert set(table["state"]) == {"missing"}


def test_entries_for_methods_a_narrowed_preset_leaves_out_are_unused(tmp_path: Path) -> None:
    # `--set methods=[vanilla,cutout]` on a preset with per-method entries for other methods
    cfg = _cfg(method_seeds={"augmix": [0, 1, 2]}, method_hparams={"augmix": {"width": 1}})
    check_suite_config(cfg)
    assert [(j.method, j.seed) for j in plan_jobs(cfg, tmp_path, 10)] == [
        ("vanilla", 0), ("vanilla", 1), ("cutout", 0), ("cutout", 1)]


@pytest.mark.parametrize(("seeds", "message"), [
    ({"augmx": [0, 1]}, "method_seeds names 'augmx', which is not a method; valid: vanilla, cutout"),
    ({"vanilla": []}, "method_seeds.vanilla is []; valid: one or more distinct seeds"),
    ({"vanilla": [0, 0]}, "method_seeds.vanilla is [0, 0]; valid: one or more distinct seeds"),
    ({"vanilla": [-1]}, "method_seeds.vanilla is -1; valid: an integer >= 0"),
])
def test_bad_method_seeds_are_one_line_errors(seeds: dict[str, list[int]], message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        check_suite_config(replace(_cfg(), method_seeds=seeds))


def test_status_refuses_an_unknown_method_in_method_seeds(tmp_path: Path) -> None:
    preset = write_preset(tmp_path, method_seeds={"mixpu": [0, 1, 2]})
    result = CliRunner().invoke(app, ["status", "--preset", str(preset), "--work",
                                      str(tmp_path / "w")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "method_seeds names 'mixpu'" in lines[0] and "valid: vanilla" in lines[0]
    assert "Traceback" not in result.output
