"""`check`: the regression gate between a committed summary and a new one.

Compares, for every (method, protocol) row of the baseline, the clean error, the mCE and the
mCE delta against vanilla. Exit codes: 0 pass, 1 regression (some number moved by more than
the tolerance, or a row disappeared), 2 unusable input.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metabn_bench.errors import UserError
from metabn_bench.report import SCHEMA

COMPARED = ("clean_error", "mce", "delta_mce_vs_vanilla")


@dataclass
class Difference:
    """One compared number that moved by more than the tolerance."""

    method: str
    protocol: str
    metric: str
    baseline: float | None
    current: float | None

    @property
    def delta(self) -> float | None:
        """current - baseline, in points."""
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


@dataclass
class CheckResult:
    """The outcome: differences beyond tolerance and rows missing from the current summary."""

    tolerance: float
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.differences and not self.missing


def load_summary(path: str | Path) -> dict[str, Any]:
    """A summary.json, validated enough to compare (UserError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"summary '{path}' does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"summary '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("rows"), list):
        raise UserError(f"'{path}' is not a {SCHEMA} file (needs 'schema' and 'rows')")
    for row in data["rows"]:
        if not isinstance(row, dict) or not {"method", "protocol", "clean_error", "mce"} <= set(row):
            raise UserError(f"'{path}': every row needs method, protocol, clean_error and mce")
    return data


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def compare(baseline: dict[str, Any], current: dict[str, Any], tolerance: float) -> CheckResult:
    """Differences between two summaries beyond `tolerance` points (either direction)."""
    if tolerance < 0:
        raise UserError(f"tolerance must be >= 0 points, got {tolerance}")
    result = CheckResult(tolerance)
    now = {(r["method"], r["protocol"]): r for r in current["rows"]}
    for row in baseline["rows"]:
        key = (row["method"], row["protocol"])
        if key not in now:
            result.missing.append(key)
            continue
        for metric in COMPARED:
            if metric not in row:
                continue
            old, new = _number(row.get(metric)), _number(now[key].get(metric))
            result.compared += 1
            moved = (old is None) != (new is None) or (
                old is not None and new is not None and abs(new - old) > tolerance)
            if moved:
                result.differences.append(Difference(*key, metric, old, new))
    return result
