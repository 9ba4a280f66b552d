"""`metabn-bench gate noise`: run the gate's tiers under simulated machines, write noise.json.

Each variant runs in its own process, because torch reads ATEN_CPU_CAPABILITY, oneDNN's ISA
cap and the OpenMP thread count once, at start-up. A variant whose output already exists in
the scratch directory is not run again, so an interrupted measurement resumes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metabn_bench import fsio
from metabn_bench.errors import UserError
from metabn_bench.gate.compare import load_summary
from metabn_bench.gate.exact import CORRUPTED_FILE, FINGERPRINT_FILES, REFERENCE
from metabn_bench.gate.noise import (
    NOISE_FILE,
    NOISE_SCHEMA,
    SEED_VARIANTS,
    VARIANTS,
    Variant,
    exact_noise,
    statistical_noise,
)

Log = Callable[[str], None]
TIERS = ("exact", "statistical")


def read_exact(directory: Path) -> dict[str, Any]:
    """The files of one exact-tier computation."""
    return {"summary": load_summary(directory),
            "fingerprints": {name: json.loads((directory / name).read_text())
                             for name in FINGERPRINT_FILES},
            "corrupted": json.loads((directory / CORRUPTED_FILE).read_text())}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "metabn_bench", *args]


def _run(cmd: list[str], env: dict[str, str], log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as fh:
        done = subprocess.run(cmd, env={**os.environ, **env}, stdout=fh, stderr=subprocess.STDOUT,
                              check=False)
    if done.returncode != 0:
        raise UserError(f"`{' '.join(cmd[2:])}` failed (exit {done.returncode}); see {log_file}")


def run_variant(variant: Variant, tier: str, preset: str, results_dir: Path, scratch: Path) -> Path:
    """One tier under one variant, in a fresh process; the directory of its outputs."""
    out = scratch / variant.name / tier
    sets = [arg for o in variant.overrides for arg in ("--set", o)]
    if tier == "exact":
        if not (out / "summary.json").is_file():
            _run(_cli("gate", "exact", "--preset", preset, "--reference", str(results_dir / REFERENCE),
                      "--out", str(out), *sets), variant.env, out.parent / f"{tier}.log")
    elif not (out / "summary.json").is_file():
        _run(_cli("run", "--preset", preset, "--out", str(out), "--work", str(out.parent / "work"),
                  "--set", "train.device=cpu", "--no-progress", *sets), variant.env,
             out.parent / f"{tier}.log")
    return out


def measure_noise(preset: str, results_dir: Path, scratch: Path, tiers: Sequence[str] = TIERS,
                  variants: Sequence[Variant] | None = None, log: Log = lambda _m: None) -> Path:
    """Run `tiers` under every variant (plus training seeds for the statistical tier).

    Writes results_dir/noise.json; a tier not measured this time keeps its earlier record.
    """
    for tier in tiers:
        if tier not in TIERS:
            raise UserError(f"unknown gate tier '{tier}'; valid: {', '.join(TIERS)}")
    path = results_dir / NOISE_FILE
    noise: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    noise.update({"schema": NOISE_SCHEMA, "preset": preset,
                  "variants": {v.name: {"env": v.env, "overrides": list(v.overrides), "note": v.note}
                               for v in (*VARIANTS, *SEED_VARIANTS)}})
    if "exact" in tiers:
        chosen = list(variants or VARIANTS)
        runs = {}
        for v in chosen:
            log(f"exact tier under {v.name} ({v.note})")
            runs[v.name] = read_exact(run_variant(v, "exact", preset, results_dir, scratch))
        noise["exact"] = exact_noise(read_exact(results_dir / REFERENCE), runs)
    if "statistical" in tiers:
        chosen = list(variants or (*VARIANTS, *SEED_VARIANTS))
        runs = {"baseline": load_summary(results_dir)}
        for v in chosen:
            log(f"statistical tier (the {preset} suite from scratch) under {v.name} ({v.note})")
            runs[v.name] = load_summary(run_variant(v, "statistical", preset, results_dir, scratch))
        noise["statistical"] = statistical_noise(runs)
    fsio.write_json(path, noise)
    return path
