"""Made-up per-cell rows with per-image vectors, for tests of reports and statistics.

The numbers are drawn, not measured: they only exercise the aggregation code.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from metabn_bench.evaluation.per_image import PerImage, row_key

SET_ID = "testset0000"
CORRUPTIONS = ("gaussian_noise", "defocus_blur", "contrast")
# Probability that an image is misclassified, per method and corruption ('clean' included).
WRONG = {
    "vanilla": {"clean": 0.1, "gaussian_noise": 0.4, "defocus_blur": 0.3, "contrast": 0.5},
    # cutout: much better on noise (a win), identical on blur (a tie), worse on contrast (a loss)
    "cutout": {"clean": 0.1, "gaussian_noise": 0.2, "defocus_blur": 0.3, "contrast": 0.7},
}


def make_rows(n: int = 400, seeds: tuple[int, ...] = (0, 1), protocols: tuple[str, ...] = ("none",),
              methods: tuple[str, ...] = ("vanilla", "cutout"), dataset: str = "synthetic",
              arch: str = "wrn10_1", corruptions: tuple[str, ...] = CORRUPTIONS,
              source: str = "synthetic shapes v1") -> tuple[list[dict[str, Any]], PerImage]:
    """Rows in eval.jsonl form (per_image true) and their vectors (True = correct)."""
    rows, vectors = [], {}
    cells = [("clean", 0)] + [(c, s) for c in corruptions for s in range(1, 6)]
    for method in methods:
        for seed in seeds:
            for protocol in protocols:
                for corruption, severity in cells:
                    # blur draws its images from the vanilla stream: an exact tie
                    who = "vanilla" if corruption == "defocus_blur" else method
                    rng = np.random.default_rng([seed, severity, zlib.crc32(f'{corruption}/{who}'.encode())])
                    p = WRONG[method].get(corruption, 0.3) + 0.02 * severity
                    correct = rng.random(n) >= p
                    row = {"run_id": f"{method}-s{seed}", "method": method, "arch": arch,
                           "dataset": dataset, "data_source": source, "seed": seed,
                           "set_id": SET_ID, "size_preset": "cifar", "corruption": corruption,
                           "severity": severity, "group": "x", "n": n,
                           "errors": int((~correct).sum()), "error": 100.0 * (~correct).mean(),
                           "protocol": protocol, "protocol_options": {}, "test_batch_size": 100,
                           "reset": "per cell", "seconds": 0.0, "per_image": True}
                    rows.append(row)
                    vectors[row_key(row)] = correct
    return rows, vectors
