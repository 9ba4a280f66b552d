"""`check`: the regression gate between a committed summary and a new one.

Compares, for every (method, protocol) row of the baseline, the clean error, the mCE and the
mCE delta against vanilla. Exit codes: 0 pass, 1 regression (some number moved by more than
the tolerance, a row disappeared, or a row's mCE now averages other corruptions), 2 unusable
input (not a summary, or summaries of different data). Rows only the current summary has are
listed, not failed (`strict` fails them too: the CI gate uses it so that a method added to
the suite cannot stay outside the committed baseline). Differences in the software or device
that produced the two summaries are reported as context: they explain a failure, not excuse it.
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
    """The outcome: differences beyond tolerance, missing, added and redefined rows."""

    tolerance: float
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    added: list[tuple[str, str]] = field(default_factory=list)
    redefined: list[tuple[str, str, list[str], list[str]]] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    strict: bool = False

    @property
    def passed(self) -> bool:
        """No number moved beyond the tolerance, no row lost or redefined (nor added, if strict)."""
        return not (self.differences or self.missing or self.redefined
                    or (self.strict and self.added))

    def lines(self) -> list[str]:
        """What a person needs to see, one line per finding."""
        out = [f"MISSING  {m} [{p}]: row absent from the current summary" for m, p in self.missing]
        out += [f"CHANGED  {m} [{p}] corruptions: {len(a)} ({', '.join(a)}) -> {len(b)} "
                f"({', '.join(b)}); mCE is not comparable" for m, p, a, b in self.redefined]
        for d in self.differences:
            delta = "n/a" if d.delta is None else f"{d.delta:+.3f}"
            out.append(f"MOVED    {d.method} [{d.protocol}] {d.metric}: {d.baseline} -> {d.current} "
                       f"({delta} points, tolerance {self.tolerance})")
        word = "NEW     " if not self.strict else "NEW (not in the baseline)"
        out += [f"{word} {m} [{p}]: not compared" for m, p in self.added]
        out += [f"CONTEXT  {c}" for c in self.context]
        return out


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
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


_CONTEXT = (("versions", "metabn_bench"), ("versions", "torch"), ("versions", "numpy"),
            ("versions", "python"), ("device", "type"), ("device", "name"), ("device", "threads"),
            ("preset",))


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


def compare(baseline: dict[str, Any], current: dict[str, Any], tolerance: float,
            strict: bool = False) -> CheckResult:
    """Differences between two summaries beyond `tolerance` points (either direction)."""
    if tolerance < 0:
        raise UserError(f"tolerance must be >= 0 points, got {tolerance}")
    src_a = _get(baseline.get("provenance", {}), ("data_source",))
    src_b = _get(current.get("provenance", {}), ("data_source",))
    if src_a and src_b and src_a != src_b:
        raise UserError(f"the summaries are of different data ('{src_a}' vs '{src_b}'); compare "
                        "like with like, or regenerate the baseline")
    result = CheckResult(tolerance, strict=strict, context=context_differences(baseline, current))
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
            result.compared += 1
            moved = (old is None) != (new is None) or (
                old is not None and new is not None and abs(new - old) > tolerance)
            if moved:
                result.differences.append(Difference(*key, metric, old, new))
    return result
