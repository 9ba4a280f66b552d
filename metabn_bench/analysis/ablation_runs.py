"""The runs of the Meta-BN ablation: run (record) directories grouped by variant.

A run is named `<method>-s<seed>-<hash>` (a suite's run and its record) or `<variant>-s<seed>`
(a training control, `analysis control`); its variant is the name without `-s<seed>` and the
hash. Seeds of one variant are grouped; variants never are. Every run of the table must share
one recipe (its config apart from method, seed and hparams) and one evaluation set, and the
runs of one variant must differ in the seed only, so that a row differs from another in what
its name says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metabn_bench.config import TrainConfig, identity
from metabn_bench.data import per_image
from metabn_bench.errors import UserError
from metabn_bench.methods import METHODS
from metabn_bench.runs import CONFIG, EVAL_FILE, is_applicable, load_config, read_eval_rows

RUN_NAME = re.compile(r"^(?P<variant>[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*?)-s(?P<seed>\d+)"
                      r"(?:-[0-9a-f]{10})?$")
# Options that name another run of the same seed (post_hoc's backbone): they differ between
# the seeds of one variant by design.
PER_SEED_OPTIONS = ("backbone_run",)


@dataclass
class AblationRun:
    """One run directory (or its record) of the ablation, with its rows and per-image vectors."""

    path: Path
    variant: str
    seed: int
    config: TrainConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    vectors: per_image.PerImage = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def variant_of(name: str) -> tuple[str, int]:
    """'joint-s1' -> ('joint', 1); 'metabn-s2-0123456789' -> ('metabn', 2)."""
    found = RUN_NAME.match(name)
    if not found:
        raise UserError(f"run directory '{name}' is not named <variant>-s<seed> or "
                        "<method>-s<seed>-<hash>; valid: e.g. bound0-s0, metabn-s0-cb67df6292")
    return found["variant"], int(found["seed"])


def recipe(cfg: TrainConfig) -> dict[str, Any]:
    """A run's config apart from method, seed and hparams: what every row must share."""
    return {k: v for k, v in identity(cfg).items() if k not in ("method", "seed", "hparams")}


def options(cfg: TrainConfig) -> dict[str, Any]:
    """The run's hparams that differ from its method's defaults (per-seed options named so)."""
    defaults = METHODS.get(cfg.method).default_hparams()
    return {k: "(one per seed)" if k in PER_SEED_OPTIONS else v
            for k, v in cfg.hparams.items() if defaults.get(k) != v}


def run_dirs(paths: list[Path]) -> list[Path]:
    """Each path is a run directory (it has config.json) or a folder of them (run_records/)."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise UserError(f"'{path}' is not a directory; valid: a run (record) directory or "
                            "a folder of them, e.g. results/metabn-ablation/run_records")
        here = [path] if (path / CONFIG).is_file() else sorted(
            d for d in path.iterdir() if (d / CONFIG).is_file())
        if not here:
            raise UserError(f"'{path}' holds no run directory (no {CONFIG})")
        found += here
    return found


def _load(path: Path) -> AblationRun:
    variant, seed = variant_of(path.name)
    cfg = load_config(path)
    if cfg.seed != seed:
        raise UserError(f"run '{path}' is named seed {seed} but its config has seed {cfg.seed}")
    if not (path / EVAL_FILE).is_file():
        raise UserError(f"run '{path}' has no {EVAL_FILE}; evaluate it first")
    rows = [{**r, "run_id": path.name, "method": variant, "seed": seed}
            for r in read_eval_rows(path / EVAL_FILE) if is_applicable(r)]
    return AblationRun(path, variant, seed, cfg, rows, per_image.load_run(path, rows))


def load_runs(paths: list[Path]) -> list[AblationRun]:
    """The runs under `paths`, checked: one recipe, variants that differ in the seed only. A
    run found twice (a suite's record and its copy refreshed with more evaluations) counts
    once, with the copy that holds more rows."""
    by_name: dict[str, AblationRun] = {}
    for path in run_dirs(paths):
        run = _load(path)
        seen = by_name.get(run.name)
        if seen is not None and identity(seen.config) != identity(run.config):
            raise UserError(f"'{seen.path}' and '{run.path}' share a name but not a config")
        if seen is None or len(run.rows) > len(seen.rows):
            by_name[run.name] = run
    runs = list(by_name.values())
    first = runs[0]
    for run in runs[1:]:
        if recipe(run.config) != recipe(first.config):
            diff = sorted(k for k in recipe(first.config)
                          if recipe(first.config)[k] != recipe(run.config).get(k))
            raise UserError(f"runs '{first.path}' and '{run.path}' have different recipes "
                            f"({', '.join(diff)}); an ablation row may differ in its hparams only")
    for variant in {r.variant for r in runs}:
        group = [r for r in runs if r.variant == variant]
        keys = {(r.config.method, repr(sorted(options(r.config).items()))) for r in group}
        if len(keys) > 1:
            raise UserError(f"the runs of variant '{variant}' differ in more than the seed "
                            f"({', '.join(r.name for r in group)}); rename one")
        seeds = [r.seed for r in group]
        if len(set(seeds)) != len(seeds):
            raise UserError(f"variant '{variant}' has two runs of one seed "
                            f"({', '.join(r.name for r in group)}); keep one")
    return runs
