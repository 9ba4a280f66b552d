"""Calibration from per-image confidences: the pure-numpy formulas that evaluation and reports share.

Evaluation stores each image's confidence (its maximum softmax probability) beside whether it was
classified correctly (data/per_image.py); from these two vectors alone a report can recompute and
bootstrap the expected calibration error and draw reliability diagrams without the model. The
binning is that of Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017): 15
equal-width confidence bins on [0, 1], bin m (from 0) holding the confidences in [m/15, (m+1)/15)
and the last bin also 1.0 (the same bins as torchmetrics' calibration error, which evaluation uses).
"""

from __future__ import annotations

import numpy as np

BINS = 15  # Guo et al. 2017; the number used by the calibration-under-shift literature


def bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The bin of each confidence: floor(c * bins), clipped to [0, bins - 1]."""
    c = np.asarray(confidence, dtype=np.float64)
    return np.clip(np.floor(c * bins).astype(np.int64), 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray,
                bins: int = BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: image count, mean confidence and accuracy (both NaN for an empty bin)."""
    c = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if c.shape != hit.shape:
        raise ValueError(f"{c.shape[0]} confidences but {hit.shape[0]} correctness values")
    idx = bin_index(c, bins)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=c, minlength=bins) / count
        acc = np.bincount(idx, weights=hit, minlength=bins) / count
    return count, conf, acc


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """ECE (Guo et al. 2017): sum over bins of |accuracy - mean confidence| x bin share, in [0, 1]."""
    count, conf, acc = reliability(confidence, correct, bins)
    if count.sum() == 0:
        return float("nan")
    used = count > 0
    return float(np.sum(count[used] * np.abs(acc[used] - conf[used])) / count.sum())
