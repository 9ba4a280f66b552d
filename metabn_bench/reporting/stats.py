"""Paired comparisons with a baseline: bootstrap confidence intervals over test images.

Every error this toolkit reports is a mean over the same test images, so the difference between
two methods is a mean of per-image differences: for image i, d_i = e_i(method) - e_i(baseline),
where e_i is the fraction of the scope's cells (clean; every common corruption x severity for
the mCE; the 5 severities of one corruption) in which image i is misclassified, averaged over
seeds. Seeds are paired by value where both methods have them (only the shared seeds are used);
without a shared seed the two seed-means are compared. The delta is mean(d) x 100 points.

The paired bootstrap (Efron & Tibshirani 1993) resamples image indices with replacement, the
same indices for both methods, and recomputes mean(d); the 2.5 and 97.5 percentiles of the
resampled deltas give the 95% interval. The interval reflects which test images were drawn, not
the variation between training seeds (the summary's standard deviations show that). Resampling
is seeded, so the same inputs give the same interval on every machine.

Win / tie / loss per corruption: win when the whole interval of that corruption's delta is
below zero, loss when it is above zero, tie otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metabn_bench.corruptions import names as cnames
from metabn_bench.data.per_image import KEY_FIELDS, PerImage, row_key
from metabn_bench.seeding import derive_seed

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
_CHUNK = 250  # resamples per matrix product (bounds memory at 250 x n counts)


@dataclass(frozen=True)
class Interval:
    """A paired delta (points, method - baseline) and its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """'win' (interval below 0: fewer errors), 'loss' (above 0) or 'tie'."""
        if self.high < 0:
            return "win"
        if self.low > 0:
            return "loss"
        return "tie"

    def as_list(self) -> list[float]:
        """[low, high], as stored in summary.json."""
        return [self.low, self.high]


@dataclass
class Comparison:
    """One (method, protocol) against the baseline method under the same protocol."""

    method: str
    protocol: str
    baseline: str
    seeds: list[int] = field(default_factory=list)  # the seeds used (paired when seeds_paired)
    seeds_paired: bool = True
    n_images: int = 0
    n_cells: int = 0  # common-corruption cells in the mCE scope
    clean: Interval | None = None
    mce: Interval | None = None
    corruptions: dict[str, Interval] = field(default_factory=dict)
    reason: str | None = None  # why there is no interval
    # Intervals with seed variance (hierarchical.py) and per-seed deltas (paired seeds only)
    clean_seeds: Interval | None = None
    mce_seeds: Interval | None = None
    per_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # scope -> seed -> delta
    # scope ('clean', 'mce') -> per-run errors in points (method n x k_m, baseline n x k_b)
    seed_columns: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict,
                                                                    repr=False)

    def win_tie_loss(self) -> dict[str, list[str]]:
        """Corruptions by verdict."""
        out: dict[str, list[str]] = {"win": [], "tie": [], "loss": []}
        for name, interval in self.corruptions.items():
            out[interval.verdict].append(name)
        return out


def describe(resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> dict[str, Any]:
    """The method, as recorded in summary.json."""
    return {"method": "paired bootstrap over test images (same resampled indices for both "
                      "methods; seeds paired by value)",
            "resamples": resamples, "level": level, "seed": seed,
            "verdict": "win if the interval lies below 0, loss if above 0, tie otherwise",
            "scope": "test-image sampling only; seed-to-seed variation is in the *_std fields"}


def bootstrap_means(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Means of `diffs` (n images x k columns) over `resamples` resamples of the n images.

    One set of resampled indices serves every column, so columns stay paired. Returns
    (resamples x k). A resample is a vector of counts (how often each image was drawn), so
    all columns are averaged in one matrix product.
    """
    n = diffs.shape[0]
    rng = np.random.default_rng(derive_seed("paired bootstrap", seed, n, resamples))
    out = np.empty((resamples, diffs.shape[1]))
    for start in range(0, resamples, _CHUNK):
        b = min(_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        out[start:start + b] = counts @ diffs / n
    return out


def interval(estimate: float, resampled: np.ndarray, level: float) -> Interval:
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(resampled, [tail, 100.0 - tail])
    return Interval(float(estimate), float(low), float(high))


class Runs:
    """Per-image error matrices of one (method, protocol): run -> {cell: wrong vector}."""

    def __init__(self, g: pd.DataFrame, vectors: PerImage) -> None:
        self.seeds: dict[int, str] = {}
        self.cells: dict[str, dict[tuple[str, int], np.ndarray]] = {}
        self.set_ids = set(g["set_id"]) if "set_id" in g else set()
        if not vectors:
            return
        for run_id, rows in g.groupby("run_id", sort=False):
            found = {}
            for row in rows.to_dict("records"):
                vec = vectors.get(row_key(row))
                if vec is not None:
                    found[(str(row["corruption"]), int(row["severity"]))] = ~vec
            if found:
                self.seeds[int(rows["seed"].iloc[0])] = str(run_id)
                self.cells[str(run_id)] = found

    def per_run_error(self, seeds: Iterable[int], cells: list[tuple[str, int]]) -> np.ndarray:
        """(n images x len(seeds)): fraction of `cells` each image is wrong in, per run."""
        return np.stack([np.mean([self.cells[self.seeds[s]][c] for c in cells], axis=0)
                         for s in seeds], axis=1)

    def per_image_error(self, seeds: Iterable[int], cells: list[tuple[str, int]]) -> np.ndarray:
        """Fraction of `cells` each image is wrong in, averaged over the runs of `seeds`."""
        return self.per_run_error(seeds, cells).mean(axis=1)

    def shared_cells(self, seeds: Iterable[int]) -> set[tuple[str, int]]:
        sets = [set(self.cells[self.seeds[s]]) for s in seeds]
        return set.intersection(*sets) if sets else set()


def scopes(cells: set[tuple[str, int]]) -> dict[str, list[tuple[str, int]]]:
    """'clean', 'mce' and one scope per common corruption, over the given cells."""
    common = sorted(c for c in cells if c[0] in cnames.COMMON)
    out: dict[str, list[tuple[str, int]]] = {}
    if ("clean", 0) in cells:
        out["clean"] = [("clean", 0)]
    if common:
        out["mce"] = common
    for name in cnames.canonical_order(sorted({c for c, _ in common})):
        out[name] = [c for c in common if c[0] == name]
    return out


def pair_seeds(method: Runs, base: Runs) -> tuple[list[int], list[int], bool]:
    shared = sorted(set(method.seeds) & set(base.seeds))
    if shared:
        return shared, shared, True
    return sorted(method.seeds), sorted(base.seeds), False


def paired_comparisons(df: pd.DataFrame, vectors: PerImage, baseline: str = "vanilla",
                       resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = SEED) -> list[Comparison]:
    """Every (method, protocol) against `baseline` under the same protocol (long frame `df`)."""
    if df.empty:
        return []
    if not set(KEY_FIELDS) <= set(df.columns):
        vectors = {}  # rows without cell identities cannot be paired
    groups = {key: g for key, g in df.groupby(["method", "protocol"], sort=False)}
    comparisons: list[Comparison] = []
    columns: list[np.ndarray] = []
    slots: list[tuple[Comparison, str, float]] = []
    for (method, protocol), g in groups.items():
        if method == baseline:
            continue
        comp = Comparison(method, protocol, baseline)
        comparisons.append(comp)
        if (baseline, protocol) not in groups:
            comp.reason = f"no {baseline} run under protocol {protocol}"
            continue
        runs, base = Runs(g, vectors), Runs(groups[(baseline, protocol)], vectors)
        if not runs.seeds or not base.seeds:
            side = method if not runs.seeds else baseline
            comp.reason = (f"no per-image results of {side} (evaluated before they were stored, "
                           "or read from a cells.csv without them)")
            continue
        if len(runs.set_ids | base.set_ids) > 1:
            comp.reason = "results come from more than one corrupted set"
            continue
        seeds_m, seeds_b, comp.seeds_paired = pair_seeds(runs, base)
        comp.seeds = seeds_m if comp.seeds_paired else sorted(set(seeds_m) | set(seeds_b))
        cells = runs.shared_cells(seeds_m) & base.shared_cells(seeds_b)
        by_scope = scopes(cells)
        if not by_scope:
            comp.reason = "the two methods share no evaluated cell"
            continue
        comp.n_cells = len(by_scope.get("mce", []))
        for scope, scope_cells in by_scope.items():
            m_runs = 100.0 * runs.per_run_error(seeds_m, scope_cells)
            b_runs = 100.0 * base.per_run_error(seeds_b, scope_cells)
            if scope in ("clean", "mce"):
                comp.seed_columns[scope] = (m_runs, b_runs)
            d = m_runs.mean(axis=1) - b_runs.mean(axis=1)
            comp.n_images = d.size
            columns.append(d)
            slots.append((comp, scope, float(d.mean())))
    _fill(columns, slots, resamples, level, seed)
    return comparisons


def _fill(columns: list[np.ndarray], slots: list[tuple[Comparison, str, float]],
          resamples: int, level: float, seed: int) -> None:
    """Bootstrap every column (grouped by image count, which fixes the resampling)."""
    by_n: dict[int, list[int]] = {}
    for i, col in enumerate(columns):
        by_n.setdefault(col.size, []).append(i)
    for indices in by_n.values():
        resampled = bootstrap_means(np.stack([columns[i] for i in indices], axis=1), resamples, seed)
        for j, i in enumerate(indices):
            comp, scope, estimate = slots[i]
            found = interval(estimate, resampled[:, j], level)
            if scope == "clean":
                comp.clean = found
            elif scope == "mce":
                comp.mce = found
            else:
                comp.corruptions[scope] = found
