"""CutMix (Yun et al., ICCV 2019, "CutMix: Regularization Strategy to Train Strong Classifiers
with Localizable Features")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch
from metabn_bench.methods.mixup import Mixup, sample_beta
from metabn_bench.methods.registry import METHODS


@dataclass(frozen=True)
class CutMixHparams:
    """CutMix's options (the CIFAR setting of the reference)."""

    alpha: float = 1.0  # lambda ~ Beta(alpha, alpha), one lambda and box per batch
    prob: float = 0.5  # probability that a batch is cut-mixed at all

    def __post_init__(self) -> None:
        if self.alpha <= 0 or not 0 <= self.prob <= 1:
            raise UserError(f"hparams.alpha must be > 0 and hparams.prob in [0, 1]; got "
                            f"alpha={self.alpha}, prob={self.prob}")


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): sides sqrt(1 - lam) of the image's, uniform centre, clipped.

    Draws from torch's global CPU RNG.
    """
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


@METHODS.register("cutmix")
class CutMix(Mixup[CutMixHparams]):
    """CutMix: paste a box from another image, mix labels by area (Yun et al. 2019).

    With probability `prob` per batch: lambda ~ Beta(alpha, alpha), one box for the batch, taken
    from x[perm]; lambda is recomputed from the clipped box's area; the loss mixes the two
    labels' cross-entropies with it (Mixup's training_step). Other batches: plain CE.
    torchvision.transforms.v2.CutMix is not used: it pairs neighbours (a roll by one) instead of
    a random permutation, has no per-batch probability and returns soft one-hot labels.
    """

    Hparams = CutMixHparams
    description = "a box pasted from another image, labels mixed by area (p = 0.5 per batch)"

    def batch_transform(self, batch: Batch) -> Batch:
        if float(torch.rand(())) >= self.hp.prob:
            return batch
        lam = sample_beta(self.hp.alpha)
        x = batch.x
        h, w = x.shape[2], x.shape[3]
        perm = torch.randperm(x.shape[0], device=x.device)
        top, bottom, left, right = cutmix_box(h, w, lam)
        x = x.clone()
        x[:, :, top:bottom, left:right] = batch.x[perm, :, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)
        return Batch(x, batch.y, {**batch.extra, "y_other": batch.y[perm], "lam": lam})
