"""The Report: what `build_report` returns and every format, plot and the gate read.

A typed object in place of a dict of ten keys, so that a misspelt field fails where it is
written, not in a renderer three modules away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from metabn_bench.data.per_image import PerImage
from metabn_bench.reporting.stats import Comparison


@dataclass
class Report:
    """Everything a report needs: the long frame, summary rows, comparisons, summary.json."""

    frame: pd.DataFrame  # the long table: one row per (run, protocol, cell)
    rows: list[dict[str, Any]]  # one summary row per (method, protocol)
    summary: dict[str, Any]  # the summary.json document
    comparisons: list[Comparison]  # paired comparisons of each method with the baseline
    missing: list[dict[str, Any]]  # cells missing from evaluated runs, with the reason
    unfinished: list[dict[str, Any]]  # runs not finished or not evaluated
    published: list[dict[str, Any]]  # published numbers whose setting matches
    baseline: str  # the method the deltas are taken against
    vectors: PerImage  # per-image correctness of the reported rows
    confidences: PerImage = field(default_factory=dict)  # per-image confidence, where stored
    images: list[tuple[str, str | Path]] = field(default_factory=list)  # (caption, picture)
    # (method, protocol) pairs recorded as not applicable, with the reason and footnote number
    not_applicable: list[dict[str, Any]] = field(default_factory=list)
