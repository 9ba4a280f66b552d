"""Deliberate regressions: small code or config changes of the kind real bugs make.

`metabn-bench gate regressions` applies each to a scratch copy of the package, runs the
gate's exact tier (and, with --statistical, its statistical tier) with that copy, and reports
whether the gate fails, as it must. `tests/test_gate.py` checks that every anchor below still
occurs exactly once in the package, so that the list cannot silently stop applying.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import metabn_bench
from metabn_bench.errors import UserError
from metabn_bench.gate.check import check_paths

PACKAGE = Path(metabn_bench.__file__).resolve().parent
Log = Callable[[str], None]


@dataclass(frozen=True)
class Regression:
    """Replace `old` (which must occur exactly once) by `new` in the package file `path`."""

    name: str
    path: str  # relative to the package directory
    old: str
    new: str
    what: str
    methods: tuple[str, ...] = ()  # besides vanilla, the methods whose rows can show it


REGRESSIONS = (
    Regression("augmix-jsd-off", "methods/augmix.py", "loss = ce + self.hp.jsd_weight * jsd",
               "loss = ce + 0.0 * jsd", "AugMix's Jensen-Shannon loss term switched off",
               ("augmix",)),
    Regression("severity-table-shifted", "corruptions/tables.py",
               '"gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],',
               '"gaussian_noise": [0.06, 0.08, 0.09, 0.10, 0.10],',
               "gaussian_noise's CIFAR severity table shifted by one"),
    Regression("shot-noise-table-shifted", "corruptions/tables.py",
               '"shot_noise": [500, 250, 100, 75, 50],', '"shot_noise": [250, 100, 75, 50, 50],',
               "shot_noise's CIFAR severity table shifted by one"),
    Regression("bn-adapt-noop", "evaluation/protocols.py",
               "module.running_mean.copy_(p * mean_src + (1 - p) * mean)",
               "module.running_mean.copy_(mean_src + 0 * mean)",
               "BN adaptation keeps the source means (a no-op for the means)"),
    Regression("tent-lr-wrong", "evaluation/protocols.py", "lr: float = 1e-3, steps: int = 1",
               "lr: float = 1e-2, steps: int = 1", "Tent's learning rate 10x too large"),
    Regression("metabn-corrections-off-at-test", "models/metabn.py",
               "        dg, db = self.corrections(x)\n        gamma = self.weight * (1 + dg)",
               "        dg, db = (0 * t for t in self.corrections(x))\n"
               "        gamma = self.weight * (1 + dg)",
               "Meta-BN's corrections disabled at test time", ("metabn",)),
    Regression("labels-off-by-one", "data/synthetic.py",
               "ArraySet(images, labels.astype(np.int64),",
               "ArraySet(images, np.where(labels == 3, 4, labels).astype(np.int64),",
               "class 3's labels off by one (read as class 4)"),
    Regression("eval-clean-set", "evaluation/evaluate.py",
               'return self.clean if cell[0] == "clean" else self.cset.cell(*cell)',
               "return self.clean", "every cell evaluated on the clean images"),
    Regression("mce-severity-twice", "reporting/metrics.py",
               '"mce": float(common["error"].mean()) if len(common) else np.nan,',
               '"mce": float(pd.concat([common["error"], common[common["severity"] == 5]["error"]])'
               '.mean()) if len(common) else np.nan,',
               "the mCE averages severity 5 twice"),
    Regression("cutout-hole-halved", "methods/cutout.py", "size: int = 16",
               "size: int = 8", "Cutout's default hole 8 pixels instead of 16 (a config slip)",
               ("cutout",)),
    Regression("mixup-alpha-wrong", "methods/mixup.py", "alpha: float = 1.0",
               "alpha: float = 0.2", "Mixup's Beta(alpha, alpha) with alpha 0.2 instead of 1",
               ("mixup",)),
)


def anchor_count(reg: Regression, package: Path = PACKAGE) -> int:
    """How often the regression's anchor occurs in the package file (must be 1)."""
    path = package / reg.path
    return path.read_text().count(reg.old) if path.is_file() else 0


def apply_to_copy(reg: Regression, scratch: Path) -> Path:
    """A copy of the package in scratch/ with `reg` applied; the directory to put on sys.path."""
    if anchor_count(reg) != 1:
        raise UserError(f"regression '{reg.name}': its anchor occurs {anchor_count(reg)} times in "
                        f"{reg.path} (needs exactly 1); update gate/regressions.py")
    root = scratch / reg.name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(PACKAGE, root / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    target = root / PACKAGE.name / reg.path
    target.write_text(target.read_text().replace(reg.old, reg.new))
    return root


def _gate_run(root: Path, args: list[str], log_file: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(root)}
    with open(log_file, "w") as fh:  # cwd=root: the copy, not the installed package, is imported
        done = subprocess.run([sys.executable, "-m", PACKAGE.name, *args], cwd=root, env=env,
                              stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}; see {log_file}")


def run_regression(reg: Regression, baseline: Path, scratch: Path, statistical: bool,
                   preset: str = "smoke") -> dict[str, str]:
    """Apply one regression and run the gate's tiers on it: {tier: 'caught' | 'MISSED' | error}."""
    # absolute: the tiers run with the copy as working directory, the check reads from here
    root = apply_to_copy(reg, scratch).resolve()
    out: dict[str, str] = {}
    # Only the methods that can show the regression (vanilla, for the deltas): minutes, not tens.
    methods = ("vanilla", *reg.methods)
    only = ["--set", f"methods=[{','.join(methods)}]"]
    tiers = {"exact": ["gate", "exact", "--preset", preset, "--reference",
                       str((baseline / "reference").resolve()), "--out", str(root / "exact"), *only]}
    if statistical:
        tiers["statistical"] = ["run", "--preset", preset, "--out", str(root / "statistical"),
                                "--work", str(root / "work"), "--set", "train.device=cpu",
                                "--no-progress", *only]
    for tier, args in tiers.items():
        try:
            _gate_run(root, args, root / f"{tier}.log")
        except RuntimeError as exc:  # a crash is caught too: the gate's run fails
            out[tier] = f"caught (the run failed: {exc})"
            continue
        result = check_paths(baseline, root / tier, strict=True, methods=set(methods)).result
        first = next(iter(result.lines()), "")
        out[tier] = f"caught: {first}" if not result.passed else "MISSED"
    return out


def run_regressions(baseline: Path, scratch: Path, names: list[str] | None = None,
                    statistical: bool = False, log: Log = lambda _m: None) -> dict[str, dict[str, str]]:
    """Every (or the named) regression through the gate; their outcomes by name."""
    known = {r.name: r for r in REGRESSIONS}
    for name in names or []:
        if name not in known:
            raise UserError(f"unknown regression '{name}'; valid: {', '.join(known)}")
    outcomes = {}
    for reg in REGRESSIONS:
        if names and reg.name not in names:
            continue
        log(f"{reg.name}: {reg.what}")
        outcomes[reg.name] = run_regression(reg, baseline, scratch, statistical)
        for tier, verdict in outcomes[reg.name].items():
            log(f"  {tier}: {verdict}")
    return outcomes
