"""Training controls of the Meta-BN ablation: standalone runs under a suite preset's recipe.

A control is one (method, seed) of a suite preset with extra method hparams. Its config is
made by the suite's own planner (`suite.jobs.plan_jobs`) from the preset with the control's
hparams, so a control and the suite's run of the same method and seed differ in the hparams
only (`metabn-bench analysis ablation` checks that every row shares one recipe). The run trains
into `<work>/<variant>-s<seed>/`, is evaluated under the preset's protocols and test batch size
on the suite's corrupted set, and its run record (`suite/records.py`) is saved under
`<results>/run_records/<variant>-s<seed>/`. A control whose record already exists with the same
identity and every cell of every protocol is skipped.

    metabn-bench analysis control VARIANT SEED --preset P --work DIR --corrupted DIR
        --results DIR [--set suite.key=value ...] [--hparam key=value ...]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metabn_bench.config import SuiteConfig, TrainConfig, load_preset, parse_overrides, replace
from metabn_bench.errors import UserError
from metabn_bench.suite.jobs import Job, plan_jobs
from metabn_bench.suite.records import record_dir, save_record
from metabn_bench.suite.status import record_complete

VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# The class count only sizes the model; no part of a run's identity depends on it (train()
# resolves hparams with the same placeholder before it has loaded the data).
_CLASSES_FOR_IDENTITY = 10
Log = Callable[[str], None]


@dataclass(frozen=True)
class Control:
    """One control run: its suite (the preset as overridden), config, directory and record."""

    suite: SuiteConfig
    config: TrainConfig
    run_dir: Path
    record: Path

    @property
    def job(self) -> Job:
        return Job(self.config.method, self.config.seed, self.config, self.run_dir)


def parse_hparams(items: list[str]) -> dict[str, Any]:
    """['bound=0', 'training_mode=joint'] -> {'bound': 0, 'training_mode': 'joint'} (values
    parsed as `--set` values are); a one-line UserError for an item without '='."""
    for item in items:
        if "=" not in item:
            raise UserError(f"--hparam '{item}' must be key=value (for example bound=0)")
    return dict(parse_overrides(items))


def control_config(suite: SuiteConfig, method: str, seed: int,
                   hparams: Mapping[str, Any]) -> TrainConfig:
    """The resolved config the suite `suite` would give (method, seed) with `hparams` added to
    the preset's own hparams of that method."""
    merged = {**suite.method_hparams.get(method, {}), **hparams}
    one = replace(suite, methods=(method,), seeds=(seed,), method_seeds={},
                  method_hparams={method: merged})
    (job,) = plan_jobs(one, Path("."), _CLASSES_FOR_IDENTITY)
    return job.config


def plan_control(variant: str, seed: int, preset: str, overrides: list[str], method: str,
                 hparams: Mapping[str, Any], work: Path, results: Path, device: str) -> Control:
    """The control `variant` of seed `seed` (a UserError for a bad name, preset or hparam)."""
    if not VARIANT_NAME.match(variant):
        raise UserError(f"variant name '{variant}' is not valid; valid: lower-case letters, "
                        "digits and '_', starting with a letter (e.g. bound0_joint)")
    if seed < 0:
        raise UserError(f"seed {seed} is not valid; valid: an integer >= 0")
    suite = load_preset(preset, overrides)
    cfg = replace(control_config(suite, method, seed, hparams), device=device)
    run_dir = work / f"{variant}-s{seed}"
    return Control(suite, cfg, run_dir, record_dir(results, run_dir))


def run_control(control: Control, corrupted: Path, results: Path, progress: bool = False,
                log: Log = lambda _msg: None) -> str:
    """Train, evaluate and record one control; 'skipped' when its record is complete, else
    'recorded'."""
    from metabn_bench.data.store import open_set
    from metabn_bench.evaluation.evaluate import evaluate
    from metabn_bench.training.loop import train

    cset = open_set(corrupted, verify=False)
    n_test = control.suite.corrupt.n_test
    if n_test and cset.n != n_test:
        raise UserError(f"corrupted set '{corrupted}' has {cset.n} images per cell; the preset "
                        f"evaluates on {n_test}: point --corrupted at the suite's set")
    if record_complete(control.suite, control.record, control.job, cset.set_id):
        log(f"skipped: {control.record} is a complete record of this control")
        return "skipped"
    info = train(control.config, control.run_dir, progress=progress)
    log(f"{'already finished' if info.skipped else 'trained'}: {control.run_dir}")
    ev = control.suite.eval
    evaluate(control.run_dir, corrupted, ev.protocols, ev.batch_size, ev.extras,
             control.config.device, verify=False, progress=progress)
    dest = save_record(control.run_dir, results)
    log(f"recorded: {dest}")
    return "recorded"
