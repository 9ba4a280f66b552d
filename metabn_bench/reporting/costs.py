"""Training cost relative to the baseline, from what each run recorded while it trained.

Every epoch row of a run's metrics.jsonl holds `seconds` (wall clock) and, since the field was
added, `cpu_seconds` (process CPU time, all threads). A run's cost is the sum over its epochs,
plus the epochs of a prerequisite run trained inside it (post_hoc Meta-BN's vanilla backbone),
since the method cannot exist without them. A method's cost is the median over its seeds (the
median, because one run that shared its cores with other work must not move the column), and
the column is that median divided by the baseline's.

Which clock: CPU seconds when every run of both rows recorded them and trained on a CPU, since
on a shared machine wall time grows with the other processes' load while the CPU time a run
uses does not (much); wall seconds otherwise (a GPU's work is not CPU time). The column says
which clock and which device it used; a row lacking a record of either is n/a, never guessed.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metabn_bench import fsio
from metabn_bench.runs import CONFIG, ENV, METRICS


@dataclass(frozen=True)
class TrainingCost:
    """What one run recorded about its training time."""

    run_id: str
    method: str
    seed: int
    epochs: int
    wall_seconds: float | None  # None: some epoch lacks `seconds`
    cpu_seconds: float | None  # None: some epoch lacks `cpu_seconds` (recorded before it existed)
    device: str  # 'cpu' or 'cuda', from env.json; '?' without one
    device_name: str
    threads: int | None


def _total(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r.get(key) for r in rows]
    if not values or any(not isinstance(v, int | float) for v in values):
        return None
    return float(sum(values))  # type: ignore[arg-type]


def _epoch_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The run's epoch rows and those of a prerequisite run trained inside it."""
    rows = fsio.read_jsonl(run_dir / METRICS)
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if (sub / CONFIG).is_file() and (sub / METRICS).is_file():
            rows += fsio.read_jsonl(sub / METRICS)
    return rows


def read_training_cost(run_dir: str | Path) -> TrainingCost | None:
    """The recorded training time of a run directory (None when it holds no epoch record)."""
    run_dir = Path(run_dir)
    try:
        cfg = json.loads((run_dir / CONFIG).read_text())
        env = json.loads((run_dir / ENV).read_text()) if (run_dir / ENV).is_file() else {}
    except (OSError, ValueError):
        return None
    rows = _epoch_rows(run_dir) if (run_dir / METRICS).is_file() else []
    if not rows or not isinstance(cfg, dict):
        return None
    device = env.get("device", {}) if isinstance(env, dict) else {}
    return TrainingCost(run_dir.name, str(cfg.get("method", "?")), int(cfg.get("seed", -1)),
                        len(fsio.read_jsonl(run_dir / METRICS)), _total(rows, "seconds"),
                        _total(rows, "cpu_seconds"), str(device.get("type", "?")),
                        str(device.get("name", "?")), device.get("threads"))


@dataclass(frozen=True)
class CostRatio:
    """A method's median training cost over its seeds divided by the baseline's."""

    method: str
    ratio: float | None
    clock: str  # 'CPU' or 'wall'
    seconds: float | None  # the method's median (s)
    baseline_seconds: float | None
    n_runs: int
    note: str = ""


def _clock(method: list[TrainingCost], base: list[TrainingCost]) -> str:
    runs = method + base
    if all(c.cpu_seconds is not None and c.device == "cpu" for c in runs):
        return "CPU"
    return "wall"


def cost_ratios(costs: dict[str, TrainingCost], run_ids: dict[str, list[str]],
                baseline: str) -> dict[str, CostRatio]:
    """method -> its cost ratio; `run_ids` maps each method to the runs of the report."""
    base = [costs[r] for r in run_ids.get(baseline, []) if r in costs]
    out = {}
    for method, ids in run_ids.items():
        mine = [costs[r] for r in ids if r in costs]
        if not mine or not base:
            who = "these runs" if not mine else baseline
            out[method] = CostRatio(method, None, "wall", None, None, len(mine),
                                    f"no training record of {who}")
            continue
        clock = _clock(mine, base)
        key = "cpu_seconds" if clock == "CPU" else "wall_seconds"
        own = [getattr(c, key) for c in mine]
        ref = [getattr(c, key) for c in base]
        if any(v is None for v in own + ref):
            out[method] = CostRatio(method, None, clock, None, None, len(mine),
                                    "some run lacks its epoch times")
            continue
        m, b = statistics.median(own), statistics.median(ref)
        out[method] = CostRatio(method, m / b if b > 0 else None, clock, m, b, len(mine))
    return out


def devices(record: list[dict[str, Any]]) -> str:
    """'cpu (x86_64, 1 threads)' etc.: the devices the recorded runs trained on."""
    seen = sorted({f"{r.get('device', '?')} ({r.get('device_name', '?')}, "
                   f"{r.get('threads', '?')} threads)" for r in record})
    return "; ".join(seen) or "unknown"


def cost_text(row: dict[str, Any], baseline: str) -> str:
    """'1.84 (CPU)' or 'n/a' for the table column."""
    ratio = row.get(f"train_cost_vs_{baseline}")
    return "n/a" if ratio is None else f"{ratio:.2f} ({row.get('train_cost_clock')})"


def costs_record(costs: dict[str, TrainingCost]) -> list[dict[str, Any]]:
    """Per-run training totals as written into summary.json (provenance of the column)."""
    return [{"run_id": c.run_id, "method": c.method, "seed": c.seed, "epochs": c.epochs,
             "wall_seconds": c.wall_seconds, "cpu_seconds": c.cpu_seconds,
             "device": c.device, "device_name": c.device_name, "threads": c.threads}
            for c in sorted(costs.values(), key=lambda c: (c.method, c.seed, c.run_id))]


def costs_from_record(record: list[dict[str, Any]]) -> dict[str, TrainingCost]:
    """The inverse of costs_record (a results directory's summary.json carries them)."""
    out = {}
    for r in record:
        out[str(r["run_id"])] = TrainingCost(
            str(r["run_id"]), str(r["method"]), int(r["seed"]), int(r["epochs"]),
            r.get("wall_seconds"), r.get("cpu_seconds"), str(r.get("device", "?")),
            str(r.get("device_name", "?")), r.get("threads"))
    return out


def from_results_dir(results: Path) -> dict[str, TrainingCost]:
    """The per-run training totals a results directory's summary.json carries (may be none)."""
    try:
        record = json.loads((results / "summary.json").read_text()).get("training") or []
        return costs_from_record(record)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # an older summary.json without the record: the cost column says n/a


def attach_costs(rows: list[dict[str, Any]], training: dict[str, TrainingCost],
                 baseline: str) -> dict[str, TrainingCost]:
    """Set train_cost_vs_<baseline> (and its clock and seconds) on every summary row;
    return the costs of the reported runs only (what summary.json records)."""
    run_ids: dict[str, list[str]] = {}
    for r in rows:
        run_ids.setdefault(r["method"], [])
        run_ids[r["method"]] += [i for i in r["run_ids"] if i not in run_ids[r["method"]]]
    used = {i: training[i] for ids in run_ids.values() for i in ids if i in training}
    ratios = cost_ratios(used, run_ids, baseline)
    for r in rows:
        c = ratios[r["method"]]
        r[f"train_cost_vs_{baseline}"] = c.ratio
        r["train_cost_clock"] = c.clock if c.ratio is not None else None
    return used
