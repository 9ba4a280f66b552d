"""Intervals that include seed variance: a two-stage (hierarchical) bootstrap, seeds then images.

A delta between two methods varies for two reasons: which test images were drawn, and which
training runs (seeds) were made. The image-only paired bootstrap (stats.py) answers the first;
this module answers both at once with the two-stage bootstrap of nested data (Davison &
Hinkley 1997, section 3.8, "multi-stage sampling"; Ren et al. 2010, "Nonparametric
bootstrapping for hierarchical data"; Saravanan et al. 2020, "Application of the hierarchical
bootstrap to multi-level data in neuroscience"):

1. resample the seeds with replacement: paired by seed value (one draw selects the seed's run
   of both methods) when the comparison pairs seeds, otherwise independently for each method;
   as for the image-only interval, a seed only one of two rows has is left out when they
   share some (method_seeds can give the baseline more seeds than a method);
2. resample the test images with replacement, the same indices for every run and both methods
   (every run is evaluated on the same images, so images stay paired);
3. the resampled delta is the mean, over the drawn seeds (with their multiplicity), of the
   per-seed mean over the drawn images.

The image draw of step 2 is the very draw of `stats.bootstrap_means` (same derived seed, same
chunks), so with one seed per method the two-stage interval equals the image-only one up to
floating-point rounding. Every run is evaluated on the same images (seeds and images are
crossed, not nested), so the seed stage sees training variation on this fixed test set and the
image stage test-set sampling: largely separate components, unlike the nested case where
resampling both stages counts the lower stage's variance twice (Davison & Hinkley 1997,
section 3.8). With k seeds the top stage produces at most k distinct values, and its variance is
(k-1)/k times the usual s^2/k: with 2 or 3 seeds it is a crude estimate biased low, which the
report says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metabn_bench.reporting.stats import (
    LEVEL,
    RESAMPLES,
    SEED,
    Comparison,
    Interval,
    bootstrap_means,
    interval,
)
from metabn_bench.seeding import derive_seed


@dataclass
class SeedColumns:
    """Per-run, per-image errors of one (comparison, scope), in points.

    `method` is (n images x k_m seeds) and `base` (n x k_b); when `paired`, k_m == k_b and
    column j of both belongs to the same seed value `seeds[j]`.
    """

    method: np.ndarray
    base: np.ndarray
    paired: bool
    seeds: list[int]

    def per_seed_deltas(self) -> dict[int, float]:
        """Paired seeds only: seed -> mean over images of (method - baseline) for that seed."""
        if not self.paired:
            return {}
        diffs = (self.method - self.base).mean(axis=0)
        return {int(s): float(d) for s, d in zip(self.seeds, diffs)}

    def estimate(self) -> float:
        """Mean over the method's seeds minus mean over the baseline's, over all images."""
        return float(self.method.mean() - self.base.mean())


def seed_weights(k: int, resamples: int, seed: int, stream: str) -> np.ndarray:
    """(resamples x k) weights of a with-replacement draw of k seeds out of k (each row sums
    to 1): the top stage. Seeded from (stream, seed, k, resamples), so it never depends on
    which comparison asks."""
    rng = np.random.default_rng(derive_seed("two-stage bootstrap", stream, seed, k, resamples))
    draws = rng.integers(0, k, size=(resamples, k)) + (np.arange(resamples) * k)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * k).reshape(resamples, k) / k


def two_stage_deltas(cols: SeedColumns, resamples: int, seed: int) -> np.ndarray:
    """The resampled deltas (one per resample) of the two-stage bootstrap of `cols`."""
    if cols.paired:
        per_seed = bootstrap_means(cols.method - cols.base, resamples, seed)  # stage 2, per seed
        return (per_seed * seed_weights(cols.method.shape[1], resamples, seed, "paired")).sum(1)
    k_m = cols.method.shape[1]
    both = bootstrap_means(np.hstack([cols.method, cols.base]), resamples, seed)
    w_m = seed_weights(k_m, resamples, seed, "method")
    w_b = seed_weights(cols.base.shape[1], resamples, seed, "baseline")
    return (both[:, :k_m] * w_m).sum(1) - (both[:, k_m:] * w_b).sum(1)


def two_stage_interval(cols: SeedColumns, resamples: int, level: float, seed: int) -> Interval:
    """The delta of `cols` and its percentile interval from the two-stage bootstrap."""
    return interval(cols.estimate(), two_stage_deltas(cols, resamples, seed), level)


def describe(resamples: int, level: float, seed: int) -> dict[str, object]:
    """The method, as recorded in summary.json's statistics."""
    return {"method": "two-stage (hierarchical) bootstrap: seeds with replacement (paired by "
                      "seed value when the comparison pairs seeds, else independently per "
                      "method), then test images with replacement (the same indices for every "
                      "run and both methods)",
            "resamples": resamples, "level": level, "seed": seed,
            "scope": "seed-to-seed and test-image variation together; with 2 or 3 seeds the "
                     "seed stage underestimates seed variance (factor (k-1)/k)",
            "reference": "Davison & Hinkley 1997 (sec. 3.8); Ren et al. 2010; "
                         "Saravanan et al. 2020"}


def add_seed_intervals(comparisons: list[Comparison], resamples: int = RESAMPLES,
                       level: float = LEVEL, seed: int = SEED) -> None:
    """Fill each comparison's two-stage intervals (clean, mCE) and per-seed deltas in place,
    from the per-run columns `stats.paired_comparisons` kept."""
    for comp in comparisons:
        if comp.reason is not None:
            continue
        for scope, (m_runs, b_runs) in comp.seed_columns.items():
            cols = SeedColumns(m_runs, b_runs, comp.seeds_paired,
                               comp.seeds if comp.seeds_paired else [])
            comp.per_seed[scope] = cols.per_seed_deltas()
            found = two_stage_interval(cols, resamples, level, seed)
            if scope == "clean":
                comp.clean_seeds = found
            elif scope == "mce":
                comp.mce_seeds = found
