"""Mixup (Zhang et al., ICLR 2018, "mixup: Beyond Empirical Risk Minimization")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method, StepResult
from metabn_bench.methods.registry import METHODS

# Mixup's options, or those of a method built on it (CutMix), each with `alpha`.
MixH = TypeVar("MixH")


@dataclass(frozen=True)
class MixupHparams:
    """Mixup's options."""

    alpha: float = 1.0  # lambda ~ Beta(alpha, alpha), one lambda per batch

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise UserError(f"hparams.alpha must be > 0, got {self.alpha}")


def sample_beta(alpha: float) -> float:
    """One draw of Beta(alpha, alpha) from torch's global CPU RNG."""
    a = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(a, a).sample())


def mixed_cross_entropy(logits: Tensor, y: Tensor, y_other: Tensor, lam: float) -> Tensor:
    """lam * CE(y) + (1 - lam) * CE(y_other), computed in float32."""
    logits = logits.float()
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y_other)


@METHODS.register("mixup")
class Mixup(Method[MixH]):
    """Mixup: convex combinations of image pairs and of their labels (Zhang et al. 2018).

    x = lam * x + (1 - lam) * x[perm]; loss = lam * CE(y) + (1 - lam) * CE(y[perm]).
    torchvision.transforms.v2.MixUp is not used: it pairs each image with its neighbour in the
    batch (a roll by one) instead of a random permutation and returns soft one-hot labels.
    """

    Hparams = MixupHparams
    description = "pairs of images and their labels mixed with lambda ~ Beta(1, 1)"

    def batch_transform(self, batch: Batch) -> Batch:
        lam = sample_beta(self.hp.alpha)
        perm = torch.randperm(batch.x.shape[0], device=batch.x.device)
        x = lam * batch.x + (1 - lam) * batch.x[perm]
        return Batch(x, batch.y, {**batch.extra, "y_other": batch.y[perm], "lam": lam})

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        logits = model(self.normalize(batch.x))
        if "y_other" not in batch.extra:
            return StepResult(F.cross_entropy(logits, batch.y), logits)
        lam = batch.extra["lam"]
        loss = mixed_cross_entropy(logits, batch.y, batch.extra["y_other"], lam)
        return StepResult(loss, logits, {"lam": lam})
