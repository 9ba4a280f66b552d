"""The gate's bands, derived from measured noise (results/<preset>/noise.json).

`metabn-bench gate noise` re-runs both tiers of the gate under CPU variants that another
machine would give (torch thread count, ATen's kernel capability, oneDNN's ISA cap) and under
other training seeds, each in its own process, and records every number. From those runs:

- statistical tier (a suite trained from scratch): each number's band is
  K x sqrt(2) x max(sd of that number, pooled sd of its metric) around the baseline; sqrt(2)
  because the baseline is itself one draw, the pooled sd so that a number whose few measured
  runs happened to agree still gets a realistic band;
- exact tier (reference checkpoints, a few training steps, Tent steps, corrupted-set
  statistics): the band is the larger of EXACT_FACTOR x the largest move measured across the
  variants and the move of two test images (for summary numbers) or FLOOR_RELATIVE (for the
  fingerprints, per key: a loss, a logged term, an update size, a severity's pixel change).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metabn_bench.errors import UserError
from metabn_bench.gate.compare import COMPARED

NOISE_FILE = "noise.json"
NOISE_SCHEMA = "metabn-bench gate noise v1"
K = 4.0  # standard deviations of a difference: a false alarm is a > 4-sigma event per number
EXACT_FACTOR = 10.0
FLOOR_IMAGES = 2  # an exact-tier summary number may move by what two test images move it
FLOOR_RELATIVE = 1e-3  # fingerprints: 0.1 % (measured moves are ~1e-5 to 1e-2, noise.json)


@dataclass(frozen=True)
class Variant:
    """One simulated machine: environment variables for torch, `--set` overrides."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    note: str = ""


# Another machine differs in thread count and in the kernels torch and oneDNN pick for its CPU.
VARIANTS = (
    Variant("threads2", {"OMP_NUM_THREADS": "2"}, note="2 torch threads (the baseline's)"),
    Variant("threads1", {"OMP_NUM_THREADS": "1"}, note="1 torch thread"),
    Variant("aten-default", {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default"},
            note="ATen without vector kernels"),
    Variant("aten-avx2", {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2"},
            note="ATen AVX2 kernels"),
    Variant("onednn-avx2", {"OMP_NUM_THREADS": "2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                            "DNNL_MAX_CPU_ISA": "AVX2"}, note="oneDNN capped at AVX2"),
    Variant("onednn-sse41", {"OMP_NUM_THREADS": "2", "ONEDNN_MAX_CPU_ISA": "SSE41",
                             "DNNL_MAX_CPU_ISA": "SSE41"}, note="oneDNN capped at SSE4.1"),
)
SEED_VARIANTS = tuple(Variant(f"seed{s}", {"OMP_NUM_THREADS": "2"}, (f"seeds=[{s}]",),
                              note=f"training seed {s}") for s in (1, 2))


def row_values(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{'method|protocol': {metric: value}} of a summary's compared numbers."""
    out: dict[str, dict[str, float]] = {}
    for row in summary["rows"]:
        vals = {m: float(row[m]) for m in COMPARED if isinstance(row.get(m), int | float)}
        out[f"{row['method']}|{row['protocol']}"] = vals
    return out


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def statistical_noise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per number and pooled per metric: the sd across the measured runs' summaries."""
    values = {name: row_values(s) for name, s in runs.items()}
    keys = sorted({k for v in values.values() for k in v})
    per_row: dict[str, dict[str, float]] = {}
    pooled: dict[str, float] = {}
    for metric in COMPARED:
        sds = []
        for key in keys:
            xs = [v[key][metric] for v in values.values() if metric in v.get(key, {})]
            if len(xs) > 1 and (metric != "delta_mce_vs_vanilla" or not key.startswith("vanilla|")):
                per_row.setdefault(key, {})[metric] = _sd(xs)
                sds.append(_sd(xs))
        pooled[metric] = math.sqrt(statistics.fmean(s * s for s in sds)) if sds else 0.0
    return {"runs": sorted(runs), "k": K, "pooled_sd": pooled, "sd": per_row, "values": values}


def exact_noise(base: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The largest move of each exact-tier number across variants, against `base`."""
    ref = row_values(base["summary"])
    summary_dev = dict.fromkeys(COMPARED, 0.0)
    training_dev = 0.0
    by_key: dict[str, float] = {}
    differing_files: dict[str, list[str]] = {}
    for name, run in runs.items():
        for key, vals in row_values(run["summary"]).items():
            for metric, value in vals.items():
                if metric in ref.get(key, {}):
                    summary_dev[metric] = max(summary_dev[metric], abs(value - ref[key][metric]))
        for name, groups in run["fingerprints"].items():
            for group, numbers in groups.items():
                for key, value in numbers.items():
                    move = relative_move(base["fingerprints"][name][group][key], value)
                    training_dev = max(training_dev, move)
                    by_key[key] = max(by_key.get(key, 0.0), move)
        differing = [f for f, h in run["corrupted"].items() if base["corrupted"].get(f) != h]
        if differing:
            differing_files[name] = differing
    return {"runs": sorted(runs), "max_abs_move": summary_dev, "max_relative_move": training_dev,
            "max_relative_move_by_key": by_key, "differing_corrupted_files": differing_files}


def relative_move(old: float, new: float) -> float:
    """|new - old| relative to |old| (absolute below 1e-12, where relative means nothing)."""
    return abs(new - old) / max(abs(old), 1e-12)


def load_noise(results_dir: Path) -> dict[str, Any]:
    """results_dir/noise.json, or a UserError saying how to make it."""
    path = results_dir / NOISE_FILE
    if not path.is_file():
        raise UserError(f"'{path}' does not exist: the gate's bands come from measured noise; "
                        "run `metabn-bench gate noise` (or pass --tolerance POINTS)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"'{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != NOISE_SCHEMA:
        raise UserError(f"'{path}' is not a {NOISE_SCHEMA} file")
    return data


@dataclass(frozen=True)
class StatisticalBands:
    """K x sqrt(2) x max(per-number sd, pooled sd) around each baseline number."""

    noise: dict[str, Any]

    def half_width(self, method: str, protocol: str, metric: str) -> tuple[float, str]:
        """The band of one number, with how it was derived."""
        stat = self.noise["statistical"]
        pooled = float(stat["pooled_sd"].get(metric, 0.0))
        own = stat["sd"].get(f"{method}|{protocol}", {}).get(metric)
        sd = max(pooled, own or 0.0)
        k = float(stat["k"])
        mine = "not measured" if own is None else f"{own:.2f}"
        return k * math.sqrt(2) * sd, (
            f"{k:g} x sqrt(2) x sd {sd:.2f} = max(this number's sd {mine}, pooled {pooled:.2f}) "
            f"over {len(stat['runs'])} runs: {', '.join(stat['runs'])}; noise.json")


@dataclass(frozen=True)
class ExactBands:
    """The measured cross-variant move x EXACT_FACTOR, at least the move of two test images."""

    noise: dict[str, Any]
    image_points: dict[str, float]  # what one test image moves each metric, in points

    def half_width(self, method: str, protocol: str, metric: str) -> tuple[float, str]:
        """The band of one exact-tier number, with how it was derived."""
        measured = float(self.noise["exact"]["max_abs_move"].get(metric, 0.0))
        floor = FLOOR_IMAGES * self.image_points[metric]
        return max(EXACT_FACTOR * measured, floor), (
            f"max({EXACT_FACTOR:g} x largest move across {len(self.noise['exact']['runs'])} CPU "
            f"variants {measured:.4f}, {FLOOR_IMAGES} test images {floor:.4f}); noise.json")


def image_points(summary: dict[str, Any]) -> dict[str, float]:
    """What one misclassified test image moves clean error, mCE and the mCE delta (points)."""
    n = int(summary.get("provenance", {}).get("config", {}).get("corrupt", {}).get("n_test", 0))
    rows = summary["rows"]
    cells = max((len(r.get("corruptions", [])) for r in rows), default=1) * 5
    n = n or 1
    return {"clean_error": 100 / n, "mce": 100 / (n * cells),
            "delta_mce_vs_vanilla": 2 * 100 / (n * cells)}


def _moves(values: dict[str, dict[str, dict[str, float]]], run: str, base: str,
           metric: str) -> list[float]:
    return [abs(v[metric] - values[base][key][metric]) for key, v in values[run].items()
            if metric in v and metric in values[base].get(key, {})
            and not (metric == "delta_mce_vs_vanilla" and key.startswith("vanilla|"))]


def spread_table(noise: dict[str, Any]) -> list[dict[str, Any]]:
    """Per measured run: its largest and typical move against the baseline run, per metric,
    and the leave-one-out check: its largest |move| / band, with the band computed from the
    other runs only (a run that passes its own leave-one-out band would pass as a new machine).
    """
    stat = noise["statistical"]
    values = stat["values"]
    out = []
    for run in stat["runs"]:
        if run == "baseline":
            continue
        rec: dict[str, Any] = {"run": run}
        for metric in COMPARED:
            moves = _moves(values, run, "baseline", metric)
            rec[f"{metric} max"] = max(moves) if moves else 0.0
            rec[f"{metric} median"] = statistics.median(moves) if moves else 0.0
        others = statistical_noise({r: {"rows": _rows(values[r])} for r in stat["runs"] if r != run})
        bands = StatisticalBands({"statistical": others})
        ratio = 0.0
        for key, vals in values[run].items():
            method, protocol = key.split("|")
            for metric, value in vals.items():
                base = values["baseline"].get(key, {}).get(metric)
                if base is None or (metric == "delta_mce_vs_vanilla" and method == "vanilla"):
                    continue
                ratio = max(ratio, abs(value - base) / bands.half_width(method, protocol, metric)[0])
        rec["leave-one-out max |move| / band"] = ratio
        out.append(rec)
    return out


def _rows(values: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    return [{"method": k.split("|")[0], "protocol": k.split("|")[1], **v} for k, v in values.items()]
