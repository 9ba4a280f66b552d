"""What `metabn-bench check` compares: one summary, or a results directory's two gate tiers.

- A summary (file, or a directory holding summary.json) made by a suite is the statistical
  tier: compared with the baseline's summary.json within `--tolerance` points, or, without
  one, within the bands of the baseline directory's noise.json.
- A directory written by `metabn-bench gate exact` is the exact tier: its summary (the
  committed reference checkpoints evaluated), its fingerprints (training steps, Tent steps,
  corrupted-set statistics) and its corrupted-set hashes are compared with the baseline's
  reference/ within the measured exact bands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metabn_bench.errors import UserError
from metabn_bench.gate.compare import Bands, CheckResult, FixedTolerance, compare, load_summary
from metabn_bench.gate.exact import CORRUPTED_FILE, CORRUPTION_STATS_FILE, FINGERPRINT_FILES, REFERENCE
from metabn_bench.gate.noise import (
    EXACT_FACTOR,
    FLOOR_RELATIVE,
    ExactBands,
    StatisticalBands,
    image_points,
    load_noise,
    relative_move,
)

EXACT_TIER = "exact"


@dataclass
class TierCheck:
    """One tier's outcome."""

    tier: str
    result: CheckResult


def is_exact(summary: dict[str, Any]) -> bool:
    """Whether a summary is the exact tier's (reference checkpoints), not a suite's."""
    return str(summary.get("provenance", {}).get("tier", "")).startswith(EXACT_TIER)


def _baseline_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"'{path}' does not exist (an exact-tier directory holds summary.json, "
                        f"{', '.join(FINGERPRINT_FILES)} and {CORRUPTED_FILE})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"'{path}' is not valid JSON: {exc}") from None


def check_paths(baseline: Path, current: Path, tolerance: float | None = None,
                strict: bool = False, methods: set[str] | None = None) -> TierCheck:
    """Compare `current` (a suite's summary or an exact-tier directory) with the baseline.

    `methods`: compare only these methods' rows (a run of part of the preset).
    """
    cur = load_summary(current)
    if tolerance is not None:
        FixedTolerance(tolerance)  # validates before anything is read further
    if is_exact(cur):
        return TierCheck(EXACT_TIER, check_exact(_baseline_dir(baseline), _baseline_dir(current),
                                                 cur, tolerance, strict, methods))
    base = _only(load_summary(baseline), methods)
    if is_exact(base):
        raise UserError(f"'{baseline}' is an exact-tier summary but '{current}' is a suite's; "
                        "compare a suite with results/<preset>/, an exact tier with the same")
    bands: Bands | float = tolerance if tolerance is not None else StatisticalBands(
        _statistical(load_noise(_baseline_dir(baseline))))
    return TierCheck("statistical", compare(base, cur, bands, strict))


def _statistical(noise: dict[str, Any]) -> dict[str, Any]:
    if "statistical" not in noise:
        raise UserError("noise.json has no statistical record; run `metabn-bench gate noise "
                        "--tiers statistical` (or pass --tolerance POINTS)")
    return noise


def _only(summary: dict[str, Any], methods: set[str] | None) -> dict[str, Any]:
    if methods is None:
        return summary
    return {**summary, "rows": [r for r in summary["rows"] if r["method"] in methods]}


def check_exact(baseline_dir: Path, current_dir: Path, current: dict[str, Any],
                tolerance: float | None, strict: bool, methods: set[str] | None = None) -> CheckResult:
    """The exact tier: reference summary, fingerprints (training, adaptation, corrupted-set
    statistics), corrupted-set hashes."""
    ref_dir = baseline_dir / REFERENCE if (baseline_dir / REFERENCE).is_dir() else baseline_dir
    base = _only(load_summary(ref_dir), methods)
    noise = None if tolerance is not None else load_noise(
        baseline_dir if (baseline_dir / REFERENCE).is_dir() else baseline_dir.parent)
    if noise is not None and "exact" not in noise:
        raise UserError("noise.json has no exact record; run `metabn-bench gate noise --tiers exact`")
    bands: Bands | float = tolerance if noise is None else ExactBands(noise, image_points(base))
    result = compare(base, current, bands, strict)
    # Each fingerprint key (loss, a logged loss term, update_norm, a severity's pixel change) has
    # its own measured move: a loss moves ~1e-5 across CPUs, a tiny logged term up to ~1e-2.
    by_key = {} if noise is None else noise["exact"].get("max_relative_move_by_key", {})
    for name in FINGERPRINT_FILES:
        kind = name.removesuffix(".json")
        base_prints = _read_json(ref_dir / name)
        if methods is not None and name != CORRUPTION_STATS_FILE:
            base_prints = {m: v for m, v in base_prints.items() if m in methods}
        _compare_fingerprints(kind, base_prints, _read_json(current_dir / name), by_key, result)
    _compare_hashes(_read_json(ref_dir / CORRUPTED_FILE), _read_json(current_dir / CORRUPTED_FILE),
                    noise, result)
    return result


def _compare_fingerprints(kind: str, base: dict[str, dict[str, float]],
                          cur: dict[str, dict[str, float]], by_key: dict[str, float],
                          result: CheckResult) -> None:
    for group, numbers in base.items():
        if group not in cur:
            result.mismatched.append(f"{group} [{kind}]: no fingerprint in the current run")
            continue
        for key, old in numbers.items():
            measured = float(by_key.get(key, 0.0))
            rel = max(EXACT_FACTOR * measured, FLOOR_RELATIVE)
            source = (f"relative {rel:.1e} = max({EXACT_FACTOR:g} x largest relative move of "
                      f"'{key}' across CPU variants {measured:.1e}, {FLOOR_RELATIVE:.0e})")
            new = cur[group].get(key)
            result.compared += 1
            if new is None or relative_move(old, new) > rel:
                result.mismatched.append(
                    f"{group} [{kind}] {key}: baseline {old:.6g}, current {new}; allowed "
                    f"[{old - rel * abs(old):.6g}, {old + rel * abs(old):.6g}] ({source})")


def _compare_hashes(base: dict[str, str], cur: dict[str, str], noise: dict[str, Any] | None,
                    result: CheckResult) -> None:
    measured = {} if noise is None else noise["exact"].get("differing_corrupted_files", {})
    varied = {f for files in measured.values() for f in files}
    for name, digest in base.items():
        result.compared += 1
        if cur.get(name) != digest and name not in varied:
            result.mismatched.append(
                f"corrupted set {name}: sha256 {str(cur.get(name))[:12]} differs from the "
                f"baseline's {digest[:12]} (identical across every measured CPU variant)")
