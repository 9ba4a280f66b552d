"""The reproduction ledger: each verdict rule on intervals, and every claim on made-up rows."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest

from metabn_bench.data.per_image import PerImage, row_key
from metabn_bench.reporting.ledger import (
    INCONCLUSIVE,
    MARGIN,
    NOT_REPRODUCED,
    NOT_TESTED,
    REPRODUCED,
    combine,
    decide,
    reproduction_ledger,
)
from metabn_bench.reporting.metrics import cells_frame
from metabn_bench.reporting.report import build_report, format_report


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (-3.0, -0.1, REPRODUCED),         # wholly below 0
    (-0.5, 0.4, NOT_REPRODUCED),      # an improvement of MARGIN or more is excluded
    (0.5, 2.0, NOT_REPRODUCED),       # the opposite ordering
    (-2.5, 0.3, INCONCLUSIVE),        # could be a large improvement, could be none
])
def test_below_rule(low: float, high: float, verdict: str) -> None:
    assert decide("below", low, high) == verdict


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (-0.6, 0.8, REPRODUCED),
    (-MARGIN, MARGIN, REPRODUCED),    # the margin's edges count as level
    (1.2, 3.0, NOT_REPRODUCED),
    (-4.0, -1.5, NOT_REPRODUCED),
    (0.2, 1.6, INCONCLUSIVE),
])
def test_level_rule(low: float, high: float, verdict: str) -> None:
    assert decide("level", low, high) == verdict


def test_combining_parts() -> None:
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert combine([REPRODUCED, NOT_TESTED]) == NOT_TESTED
    with pytest.raises(ValueError):
        decide("above", 0.0, 1.0)


# Probability that an image is wrong, per method: the claims' outcomes follow from them.
P_WRONG = {"vanilla": 0.40, "mixup": 0.30, "cutmix": 0.50, "augmix": 0.10, "cnsn": 0.25}


def _rows(n: int = 300) -> tuple[list[dict[str, Any]], PerImage]:
    rows, vectors = [], {}
    cells = [("clean", 0)] + [(c, s) for c in ("gaussian_noise", "contrast") for s in range(1, 6)]
    for method in (*P_WRONG, "cutout"):
        for seed in (0, 1):
            for protocol in ("none", "bn"):
                for corruption, severity in cells:
                    # cutout draws vanilla's images (an exact tie); bn gives the same vectors
                    # as none (no gain from adaptation)
                    who = "vanilla" if method == "cutout" else method
                    rng = np.random.default_rng([seed, severity,
                                                 zlib.crc32(f"{corruption}/{who}".encode())])
                    correct = rng.random(n) >= P_WRONG[who]
                    row = {"run_id": f"{method}-s{seed}", "method": method, "arch": "wrn10_1",
                           "dataset": "synthetic", "data_source": "made up", "seed": seed,
                           "set_id": "set0", "size_preset": "cifar", "corruption": corruption,
                           "severity": severity, "n": n, "errors": int((~correct).sum()),
                           "error": 100.0 * (~correct).mean(), "protocol": protocol,
                           "test_batch_size": 100, "per_image": True}
                    rows.append(row)
                    vectors[row_key(row)] = correct
    return rows, vectors


def test_every_claim_on_made_up_rows() -> None:
    rows, vectors = _rows()
    verdicts = {c.claim: c.verdict() for c in reproduction_ledger(cells_frame(rows), vectors, 300)}
    assert verdicts == {
        "Mixup below Standard": REPRODUCED,            # 10 points lower
        "Cutout level with Standard": REPRODUCED,      # the same images wrong: exactly 0
        "CutMix level with Standard": NOT_REPRODUCED,  # 10 points higher
        "AugMix the best baseline": REPRODUCED,
        "CNSN between Standard and AugMix": REPRODUCED,
        "BN adaptation lowers error": NOT_REPRODUCED,  # bn repeats none: 0 gain, excluded
    }


def test_a_claim_without_runs_is_not_tested_and_the_report_shows_rules() -> None:
    rows, vectors = _rows(n=100)
    rows = [r for r in rows if r["method"] in ("vanilla", "mixup")]
    report = build_report(rows, {}, vectors=vectors, resamples=100)
    claims = {c["claim"]: c for c in report.summary["ledger"]["claims"]}
    assert claims["Mixup below Standard"]["verdict"] == REPRODUCED
    assert claims["Mixup below Standard"]["published"] == "Mixup 22.3, Standard 26.9"
    assert claims["Cutout level with Standard"]["verdict"] == NOT_TESTED
    assert "no cutout runs" in claims["Cutout level with Standard"]["measured"][0]["note"]
    text = format_report(report, "markdown")
    assert "## Reproduction ledger" in text and "reproduced if hi < 0" in text
