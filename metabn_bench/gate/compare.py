"""`check`: compare a committed summary with a new one, each number within its allowed band.

Compares, for every (method, protocol) row of the baseline, the clean error, the mCE and the
mCE delta against vanilla. Each number has a band around its baseline value: a fixed
`--tolerance` in points, or the band the gate's measured noise gives it (see bands.py and
results/README.md). Exit codes: 0 pass, 1 regression (a number outside its band, a row
disappeared, or a row's mCE now averages other corruptions), 2 unusable input (not a summary,
summaries of different data, no rows or no numbers to compare, a tolerance that is not a
finite number >= 0). Rows only the current summary has are listed, not failed (`strict` fails
them too, so that a method added to a suite cannot stay outside the committed baseline).
Differences in the software or device that produced the two summaries are reported as
context: they explain a failure, they do not excuse it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from metabn_bench.errors import UserError
from metabn_bench.reporting.report import SCHEMA

COMPARED = ("clean_error", "mce", "delta_mce_vs_vanilla")


class Bands(Protocol):
    """Where each compared number may lie: a half-width in points and where it comes from."""

    def half_width(self, method: str, protocol: str, metric: str) -> tuple[float, str]:
        """The allowed |current - baseline| in points, and a short account of its origin."""
        ...


@dataclass(frozen=True)
class FixedTolerance:
    """The same half-width for every number (`check --tolerance POINTS`)."""

    points: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.points) or self.points < 0:
            raise UserError(f"tolerance must be a finite number of points >= 0, got {self.points}")

    def half_width(self, method: str, protocol: str, metric: str) -> tuple[float, str]:
        """`points` for every number."""
        return self.points, "--tolerance"


@dataclass
class Difference:
    """One compared number outside its band."""

    method: str
    protocol: str
    metric: str
    baseline: float | None
    current: float | None
    half_width: float = 0.0
    source: str = ""

    @property
    def delta(self) -> float | None:
        """current - baseline, in points."""
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    def line(self) -> str:
        """baseline, current, the allowed band and where the band comes from."""
        delta = "n/a" if self.delta is None else f"{self.delta:+.3f}"
        band = "n/a" if self.baseline is None else (
            f"[{self.baseline - self.half_width:.3f}, {self.baseline + self.half_width:.3f}]")
        return (f"MOVED    {self.method} [{self.protocol}] {self.metric}: {self.baseline} -> "
                f"{self.current} ({delta} points); allowed {band} = baseline ± "
                f"{self.half_width:.3f} ({self.source})")


@dataclass
class CheckResult:
    """The outcome: numbers outside their bands, missing, added and redefined rows."""

    tolerance: float | None = None  # the fixed tolerance, when one was given
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    added: list[tuple[str, str]] = field(default_factory=list)
    redefined: list[tuple[str, str, list[str], list[str]]] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # exact checks that failed, one line each
    strict: bool = False
    widest: float = 0.0  # the widest band used, for the pass line

    @property
    def passed(self) -> bool:
        """No number outside its band, no row lost or redefined (nor added, if strict)."""
        return not (self.differences or self.missing or self.redefined or self.mismatched
                    or (self.strict and self.added))

    def lines(self) -> list[str]:
        """What a person needs to see, one line per finding."""
        out = [f"MISSING  {m} [{p}]: row absent from the current summary" for m, p in self.missing]
        out += [f"CHANGED  {m} [{p}] corruptions: {len(a)} ({', '.join(a)}) -> {len(b)} "
                f"({', '.join(b)}); mCE is not comparable" for m, p, a, b in self.redefined]
        out += [d.line() for d in self.differences]
        out += [f"MISMATCH {m}" for m in self.mismatched]
        word = "NEW     " if not self.strict else "NEW (not in the baseline)"
        out += [f"{word} {m} [{p}]: not compared" for m, p in self.added]
        out += [f"CONTEXT  {c}" for c in self.context]
        return out

    def summary_line(self, what: str = "numbers") -> str:
        """The closing line of a passing check."""
        if self.tolerance is not None:
            return f"pass: {self.compared} {what} within {self.tolerance} points"
        return f"pass: {self.compared} {what} within their measured bands (widest ± {self.widest:.3f})"


def load_summary(path: str | Path) -> dict[str, Any]:
    """A summary.json (or a results directory holding one), validated enough to compare."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
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
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


_CONTEXT = (("versions", "metabn_bench"), ("versions", "torch"), ("versions", "numpy"),
            ("versions", "python"), ("device", "type"), ("device", "name"), ("device", "threads"),
            ("device", "cpu_capability"), ("device", "onednn_max_cpu_isa"), ("preset",))


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key, {}) if isinstance(d, dict) else {}
    return None if d == {} else d


def context_differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Provenance that differs between two summaries (software, device, threads, preset)."""
    a, b = baseline.get("provenance", {}), current.get("provenance", {})
    out = []
    for path in _CONTEXT:
        old, new = _get(a, path), _get(b, path)
        if old != new:
            out.append(f"{'.'.join(path)}: baseline {old}, current {new}")
    return out


def _check_comparable(baseline: dict[str, Any], current: dict[str, Any]) -> None:
    """UserError (exit 2) when the two summaries cannot be compared at all."""
    src_a = _get(baseline.get("provenance", {}), ("data_source",))
    src_b = _get(current.get("provenance", {}), ("data_source",))
    if src_a and src_b and src_a != src_b:
        raise UserError(f"the summaries are of different data ('{src_a}' vs '{src_b}'); compare "
                        "like with like, or regenerate the baseline")
    if not baseline["rows"]:
        raise UserError("the baseline summary has no rows: nothing to compare against")
    if not any(_number(r.get(m)) is not None for r in baseline["rows"] for m in COMPARED):
        raise UserError("every number of the baseline summary is null: nothing to compare against")


def compare(baseline: dict[str, Any], current: dict[str, Any], bands: Bands | float,
            strict: bool = False) -> CheckResult:
    """Every compared number of `baseline` against `current`, within `bands` (or fixed points)."""
    fixed = bands if isinstance(bands, int | float) else None
    if fixed is not None:
        bands = FixedTolerance(float(fixed))
    assert not isinstance(bands, int | float)
    _check_comparable(baseline, current)
    result = CheckResult(fixed, strict=strict, context=context_differences(baseline, current))
    now = {(r["method"], r["protocol"]): r for r in current["rows"]}
    before = {(r["method"], r["protocol"]) for r in baseline["rows"]}
    result.added = [key for key in now if key not in before]
    for row in baseline["rows"]:
        key = (row["method"], row["protocol"])
        if key not in now:
            result.missing.append(key)
            continue
        old_c, new_c = row.get("corruptions"), now[key].get("corruptions")
        if old_c is not None and new_c is not None and list(old_c) != list(new_c):
            result.redefined.append((*key, list(old_c), list(new_c)))
        for metric in COMPARED:
            if metric not in row:
                continue
            old, new = _number(row.get(metric)), _number(now[key].get(metric))
            half, source = bands.half_width(*key, metric)
            result.compared += 1
            result.widest = max(result.widest, half)
            moved = (old is None) != (new is None) or (
                old is not None and new is not None and abs(new - old) > half)
            if moved:
                result.differences.append(Difference(*key, metric, old, new, half, source))
    return result
