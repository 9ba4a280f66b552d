"""Calibration of one evaluated cell: ECE, negative log-likelihood and Brier score.

Accuracy alone hides whether a model knows when it is wrong under shift (Ovadia et al., "Can You
Trust Your Model's Uncertainty?", NeurIPS 2019). Per cell, next to the error, evaluation reports:

- `ece`: expected calibration error in %, 15 equal-width bins of the top-label confidence (Guo et
  al., ICML 2017), computed by torchmetrics' multiclass calibration error (L1 norm);
- `nll`: mean negative log-likelihood of the true class, in nats;
- `brier`: mean multiclass Brier score, sum over classes of (p_k - [k = y])^2, in [0, 2].

The statistics accumulate batch by batch (`CellCalibration`) and the cell's result is one dict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error

from metabn_bench.data.calibration import BINS


class CellCalibration:
    """Running sums of one cell's calibration statistics, fed one batch of logits at a time."""

    def __init__(self) -> None:
        # Tensors on the model's device: a float() per batch would synchronise every batch.
        self.nll: list[Tensor] = []
        self.brier: list[Tensor] = []
        # The softmax outputs are kept for torchmetrics' ECE: at most N x C floats per cell
        # (40 MB for 10,000 images of 1,000 classes), released when the cell ends.
        self.probs: list[Tensor] = []
        self.targets: list[Tensor] = []

    def update(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Add a batch; returns its confidences (maximum softmax probability) as float32."""
        # float32 whatever the autocast dtype: a half-precision log-softmax loses the NLL tail.
        log_p = logits.detach().float().log_softmax(dim=1)
        p = log_p.exp()
        self.nll.append(-log_p.gather(1, labels[:, None]).sum())
        onehot = torch.nn.functional.one_hot(labels, p.shape[1]).to(p.dtype)
        self.brier.append(((p - onehot) ** 2).sum())
        self.probs.append(p)
        self.targets.append(labels)
        return p.max(dim=1).values

    def result(self) -> dict[str, Any]:
        """The cell's `ece` (%), `nll` and `brier`, rounded for the row."""
        probs, target = torch.cat(self.probs), torch.cat(self.targets)
        n = target.numel()
        ece = float(multiclass_calibration_error(probs, target, num_classes=probs.shape[1],
                                                 n_bins=BINS, norm="l1"))
        nll = float(torch.stack(self.nll).sum()) / n
        brier = float(torch.stack(self.brier).sum()) / n
        return {"ece": round(100.0 * ece, 4), "nll": round(nll, 6), "brier": round(brier, 6),
                "calibration_bins": BINS}


def confidences_array(confidence: Tensor) -> np.ndarray:
    """Confidences as stored per image (float16: the report's ECE bins are 1/15 wide)."""
    return confidence.cpu().numpy().astype(np.float16)
