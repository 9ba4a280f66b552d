"""`run --preset`: corrupt once, train every (method, seed), evaluate, report.

Working files (the corrupted set, run directories) go under the work directory
(runs/<preset>/); the tables under the results directory (results/<preset>/). Run directories
are named by method, seed and the hash of their config, so anything finished is skipped and
anything interrupted resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metabn_bench import provenance
from metabn_bench.config import SuiteConfig, config_hash, replace, to_dict
from metabn_bench.corruptions.generate import corrupt_dataset
from metabn_bench.data.specs import load_split
from metabn_bench.data.store import open_set
from metabn_bench.device import resolve_device
from metabn_bench.errors import UserError
from metabn_bench.evaluate import evaluate
from metabn_bench.methods import METHODS
from metabn_bench.report import build_report, collect, write_results
from metabn_bench.train import resolve_config, train

Log = Callable[[str], None]


@dataclass
class SuiteResult:
    """Where things went and the report that was written."""

    results_dir: Path
    work_dir: Path
    report: dict[str, Any]


def _validate(cfg: SuiteConfig) -> None:
    for name in cfg.methods:
        METHODS.get(name)
    for name in cfg.method_hparams:
        if name not in cfg.methods:
            raise UserError(f"method_hparams names '{name}', which is not in methods "
                            f"({', '.join(cfg.methods)})")
    if not cfg.seeds:
        raise UserError("a preset needs at least one seed")


def run_dir_name(method: str, seed: int, cfg_hash: str) -> str:
    """<method>-s<seed>-<config hash>: readable and unique per configuration."""
    return f"{method}-s{seed}-{cfg_hash}"


def run_suite(cfg: SuiteConfig, results_dir: str | Path | None = None,
              work_dir: str | Path | None = None, progress: bool = True,
              log: Log = lambda _msg: None) -> SuiteResult:
    """Run the whole suite described by `cfg`; every step skips what is already done."""
    _validate(cfg)
    results = Path(results_dir or Path("results") / cfg.name)
    work = Path(work_dir or Path("runs") / cfg.name)
    device = resolve_device(cfg.train.device)
    data = cfg.train.data
    test = load_split(data.dataset, "test", data.data_root, cfg.corrupt.n_test, data.label)
    set_dir = work / "corrupted"
    log(f"corrupted set: {len(test)} test images of {test.source} -> {set_dir}")
    _, how = corrupt_dataset(test, set_dir, cfg.corrupt, device, data.dataset, progress)
    log(f"corrupted set ready ({how})")
    set_id = open_set(set_dir, verify=True).set_id  # hash check once; evaluations skip it
    train_set = load_split(data.dataset, "train", data.data_root, data.train_size, data.label)
    run_dirs = []
    for method in cfg.methods:
        for seed in cfg.seeds:
            tcfg = replace(cfg.train, method=method, seed=seed,
                           hparams=dict(cfg.method_hparams.get(method, {})))
            tcfg = resolve_config(tcfg, len(train_set.classes))
            run_dir = work / "train" / run_dir_name(method, seed, config_hash(tcfg))
            info = train(tcfg, run_dir, progress=progress, train_set=train_set)
            log(f"{'done already' if info.skipped else 'trained'}: {method} seed {seed} "
                f"-> {run_dir}")
            evaluate(run_dir, set_dir, cfg.eval.protocols, cfg.eval.batch_size, cfg.eval.extras,
                     cfg.train.device, verify=False, progress=progress)
            run_dirs.append(run_dir)
    found = collect(run_dirs)
    rows = [r for r in found.rows if r["protocol"] in cfg.eval.protocols and r["set_id"] == set_id]
    prov = {**provenance.environment(device), "data_source": test.source, "preset": cfg.name,
            "seeds": list(cfg.seeds), "arch": cfg.train.arch,
            "corrupted_set": f"{set_dir} ({how})", "config": to_dict(cfg)}
    report = build_report(rows, prov, vectors=found.vectors)
    write_results(report, results, f"{cfg.name}: {cfg.description or 'results'}")  # + plots/
    return SuiteResult(results, work, report)
