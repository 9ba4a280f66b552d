"""The reproduction ledger: published orderings of methods, and whether this table reproduces them.

Each claim is decided from paired mCE deltas (points, first minus second, protocol `none`
unless stated) and their two-stage (seeds, then images) 95% intervals [lo, hi]
(hierarchical.py), by the rules below, with MARGIN the largest difference read as "level"
(our choice, stated in the report; the published Cutout and CutMix rows differ from Standard
by 0.1 and 0.2 points). The equivalence rule is the confidence-interval form of the two
one-sided tests (Schuirmann 1987).

- below (A below B): reproduced if hi < 0; not reproduced if lo > -MARGIN (an improvement of
  MARGIN points or more is excluded; lo > 0 is the opposite ordering); inconclusive otherwise.
- level (A level with B): reproduced if -MARGIN <= lo and hi <= MARGIN; not reproduced if
  lo > MARGIN or hi < -MARGIN; inconclusive otherwise.
- all of several (best baseline: A below each other baseline; between: A below B and C below
  A): reproduced if every part is; not reproduced if any part is not; inconclusive otherwise.

A claim whose methods have no runs (or no per-image results) in the report is "not tested".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from metabn_bench.data.per_image import KEY_FIELDS, PerImage, row_key
from metabn_bench.reporting import hierarchical, stats
from metabn_bench.reporting.published import load_published

MARGIN = 1.0  # points of mCE: the widest interval still read as "level"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED = (
    "reproduced", "not reproduced", "inconclusive", "not tested")
RULES = {
    "below": f"reproduced if hi < 0; not reproduced if lo > -{MARGIN:g} (an improvement of "
             f"{MARGIN:g} point or more is excluded); inconclusive otherwise",
    "level": f"reproduced if the interval lies within [-{MARGIN:g}, +{MARGIN:g}]; not "
             f"reproduced if it lies wholly outside it; inconclusive otherwise",
    "all": "reproduced if every part is reproduced; not reproduced if any part is not; "
           "inconclusive otherwise",
}
AUGMIX_TABLE = "augmix2020"  # published.yaml source: the CIFAR-10-C WRN-40-2 table
BN_SOURCE = "tent2021"  # published.yaml source: source model vs BN adaptation
BASELINES = ("vanilla", "cutout", "mixup", "cutmix")  # the AugMix table's baselines we train
CNSN_SOURCE = ("Tang et al., ICCV 2021 (CrossNorm and SelfNorm): qualitatively, CNSN lands "
               "between standard training and AugMix on CIFAR-10-C (their CIFAR numbers are "
               "not yet checked against the paper, so none is quoted)")


@dataclass
class Part:
    """One paired delta of a claim: first minus second, with its two-stage interval."""

    first: str
    second: str
    rule: str  # 'below' or 'level'
    protocol_first: str = "none"
    protocol_second: str = "none"
    delta: float | None = None
    low: float | None = None
    high: float | None = None
    seeds: list[int] = field(default_factory=list)
    reason: str | None = None

    @property
    def label(self) -> str:
        a = self.first if self.protocol_first == "none" else f"{self.first} [{self.protocol_first}]"
        b = self.second if self.protocol_second == "none" else f"{self.second} [{self.protocol_second}]"
        return f"{a} − {b}"

    def verdict(self) -> str:
        """This part's verdict by its rule (module docstring)."""
        if self.delta is None or self.low is None or self.high is None:
            return NOT_TESTED
        return decide(self.rule, self.low, self.high)


def decide(rule: str, low: float, high: float, margin: float = MARGIN) -> str:
    """The verdict of one interval [low, high] under rule 'below' or 'level'."""
    if rule == "below":
        if high < 0:
            return REPRODUCED
        return NOT_REPRODUCED if low > -margin else INCONCLUSIVE
    if rule == "level":
        if -margin <= low and high <= margin:
            return REPRODUCED
        return NOT_REPRODUCED if (low > margin or high < -margin) else INCONCLUSIVE
    raise ValueError(f"unknown rule {rule!r}")


def combine(verdicts: list[str]) -> str:
    """'all' of several parts: any not reproduced wins, then any untested, then inconclusive."""
    if not verdicts:
        return NOT_TESTED
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    if NOT_TESTED in verdicts:
        return NOT_TESTED
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE


@dataclass
class Claim:
    """A published claim, its CPU-scale test and the verdict."""

    claim: str
    source: str
    published: str
    parts: list[Part]
    rule: str

    def verdict(self) -> str:
        verdicts = [p.verdict() for p in self.parts]
        return verdicts[0] if len(verdicts) == 1 else combine(verdicts)

    def as_dict(self) -> dict[str, Any]:
        """The claim as summary.json's ledger records it."""
        return {"claim": self.claim, "verdict": self.verdict(), "rule": self.rule,
                "source": self.source, "published": self.published,
                "measured": [{"delta": p.label, "delta_mce": p.delta,
                              "ci95_seeds": None if p.low is None else [p.low, p.high],
                              "seeds": p.seeds, "part_verdict": p.verdict(),
                              "note": p.reason} for p in self.parts]}


def _published(source: str, methods: tuple[str, ...]) -> str:
    """'Mixup 22.3, Standard 26.9': CIFAR-10-C mCE (%) of `source` in published.yaml."""
    found = {p.method: p for p in load_published()
             if p.source == source and p.metric == "mce" and p.setting.get("dataset") == "cifar10"}
    return ", ".join(f"{found[m].reported_as} {found[m].value:g}" for m in methods if m in found)


def _bn_published() -> str:
    values = {p.setting.get("protocol"): p for p in load_published()
              if p.source == BN_SOURCE and p.method == "vanilla" and p.metric == "severity5"
              and p.setting.get("arch") == "wrn28_10"}
    if "none" not in values or "bn" not in values:
        return ""
    return (f"severity-5 error, WRN-28-10: {values['none'].reported_as} {values['none'].value:g}"
            f" -> {values['bn'].reported_as} {values['bn'].value:g}")


def claims() -> list[Claim]:
    """The published claims with a CPU-scale analogue, untested (parts without numbers)."""
    source = AUGMIX_TABLE
    cite = "Hendrycks et al., ICLR 2020 (AugMix), CIFAR-10-C WRN-40-2 table (mCE, %)"
    out = [
        Claim("Mixup below Standard", cite, _published(source, ("mixup", "vanilla")),
              [Part("mixup", "vanilla", "below")], RULES["below"]),
        Claim("Cutout level with Standard", cite,
              _published(source, ("cutout", "vanilla")),
              [Part("cutout", "vanilla", "level")], RULES["level"]),
        Claim("CutMix level with Standard", cite,
              _published(source, ("cutmix", "vanilla")),
              [Part("cutmix", "vanilla", "level")], RULES["level"]),
        Claim("AugMix the best baseline", cite,
              _published(source, ("augmix", *BASELINES)),
              [Part("augmix", b, "below") for b in BASELINES],
              "below for each part; " + RULES["all"]),
        Claim("CNSN between Standard and AugMix", CNSN_SOURCE, "qualitative",
              [Part("cnsn", "vanilla", "below"), Part("augmix", "cnsn", "below")],
              "below for each part; " + RULES["all"]),
        Claim("BN adaptation lowers error", "Schneider et al., NeurIPS 2020; Wang et al., "
              "ICLR 2021 (Tent), CIFAR-10-C", _bn_published(),
              [Part("vanilla", "vanilla", "below", "bn", "none")], RULES["below"]),
    ]
    return out


def _as_method(df: pd.DataFrame, vectors: PerImage, method: str, protocol: str,
               label: str) -> tuple[pd.DataFrame, PerImage]:
    """The rows of (method, protocol) renamed to method `label` under protocol 'none', with
    their vectors re-keyed, so that two protocols of one method compare as two methods."""
    sel = df[(df["method"] == method) & (df["protocol"] == protocol)].copy()
    if sel.empty:
        return sel, {}
    out: PerImage = {}
    records = sel.to_dict("records")
    for r in records:
        vec = vectors.get(row_key(r))
        r.update(method=label, protocol="none", run_id=f"{r['run_id']}@{protocol}")
        if vec is not None:
            out[row_key(r)] = vec
    return pd.DataFrame(records), out


def measure(part: Part, df: pd.DataFrame, vectors: PerImage, resamples: int) -> None:
    """Fill `part`'s delta, interval and seeds from the long frame and per-image vectors."""
    if not set(KEY_FIELDS) <= set(df.columns) or df.empty:
        part.reason = "no per-image results"
        return
    first, vec_a = _as_method(df, vectors, part.first, part.protocol_first, "A")
    second, vec_b = _as_method(df, vectors, part.second, part.protocol_second, "B")
    if first.empty or second.empty:
        missing = part.first if first.empty else part.second
        part.reason = f"no {missing} runs under the protocol"
        return
    comps = stats.paired_comparisons(pd.concat([first, second], ignore_index=True),
                                     {**vec_a, **vec_b}, "B", resamples)
    hierarchical.add_seed_intervals(comps, resamples)
    (comp,) = comps
    if comp.reason or comp.mce_seeds is None:
        part.reason = comp.reason or "no common corruption cell"
        return
    iv = comp.mce_seeds
    part.delta, part.low, part.high, part.seeds = iv.estimate, iv.low, iv.high, comp.seeds


def reproduction_ledger(df: pd.DataFrame, vectors: PerImage,
                        resamples: int = stats.RESAMPLES) -> list[Claim]:
    """Every claim of `claims()`, measured on the long frame `df` and its per-image vectors."""
    out = claims()
    for claim in out:
        for part in claim.parts:
            measure(part, df, vectors, resamples)
    return out


def describe() -> dict[str, Any]:
    """The rules, as summary.json records them beside the ledger."""
    return {"margin_points": MARGIN, "metric": "CIFAR mCE delta (points), protocol none unless "
            "stated", "interval": "two-stage (seeds, then images) 95% bootstrap interval",
            "rules": RULES, "not_tested": "a method of the claim has no runs or no per-image "
            "results in the report"}
