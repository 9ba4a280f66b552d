"""AugMix (Hendrycks et al., ICLR 2020, "AugMix: A Simple Data Processing Method to Improve
Robustness and Uncertainty")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench.data.augmix import MAX_DEPTH, augmix
from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method, StepResult
from metabn_bench.methods.registry import METHODS


@dataclass(frozen=True)
class AugMixViewHparams:
    """How AugMix's views are made (the reference's CIFAR defaults); shared with the methods
    that train on the same views (augmix_metabn)."""

    severity: int = 3  # op levels ~ U(0.1, severity) on the reference's 0-10 scale
    width: int = 3  # chains mixed per image
    depth: int = -1  # ops per chain; -1 = uniform in {1, 2, 3}
    alpha: float = 1.0  # chain weights ~ Dirichlet(alpha), mixing weight m ~ Beta(alpha, alpha)
    all_ops: bool = False  # also color/contrast/brightness/sharpness (overlap the test corruptions)

    def __post_init__(self) -> None:
        if (self.severity < 1 or self.width < 1 or self.alpha <= 0
                or self.depth not in (-1, *range(1, MAX_DEPTH + 1))):
            raise UserError(f"invalid AugMix hparams: severity >= 1, width >= 1, alpha > 0, "
                            f"depth -1 or 1..{MAX_DEPTH}; got {self}")


@dataclass(frozen=True)
class AugMixHparams(AugMixViewHparams):
    """AugMix's options (the reference's CIFAR defaults)."""

    jsd: bool = True  # two augmented views and the Jensen-Shannon consistency loss
    jsd_weight: float = 12.0  # weight of the Jensen-Shannon term

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.jsd_weight < 0:
            raise UserError(f"invalid AugMix hparams: jsd_weight >= 0; got {self}")


def jensen_shannon(logits: tuple[Tensor, ...]) -> Tensor:
    """Mean over views of KL(p_view || M), M = clamp(mean of the p's, 1e-7, 1), batch-mean.

    The AugMix consistency loss (zero when every view predicts the same distribution).
    """
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    log_mixture = torch.clamp(sum(probs) / len(probs), 1e-7, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / len(probs)


class AugMixTraining:
    """AugMix's views and loss, for a Method whose hparams have AugMixViewHparams' fields and
    `jsd_weight` (AugMix, and AugMix + Meta-BN, so that both train on the same views and loss)."""

    hp: Any
    normalize: Any  # Method.normalize

    def augment(self, x: Tensor) -> Tensor:
        """One AugMix view of a [0, 1] batch (randomness from torch's global generator)."""
        hp = self.hp
        return augmix(x, None, hp.severity, hp.width, hp.depth, hp.alpha, hp.all_ops)

    def with_views(self, batch: Batch) -> Batch:
        """The batch with two AugMix views of its images in extra['views']."""
        views = (self.augment(batch.x), self.augment(batch.x))
        return Batch(batch.x, batch.y, {**batch.extra, "views": views})

    def jsd_step(self, model: nn.Module, batch: Batch) -> StepResult:
        """CE on the clean view + jsd_weight * JS(p_clean, p_aug1, p_aug2); the three views go
        through the network as one batch (so BN sees all three). Logits: the clean view's."""
        n = batch.x.shape[0]
        x = torch.cat([batch.x, *batch.extra["views"]], dim=0)
        logits = model(self.normalize(x))
        clean, aug1, aug2 = logits[:n], logits[n:2 * n], logits[2 * n:]
        ce = F.cross_entropy(clean.float(), batch.y)
        jsd = jensen_shannon((clean, aug1, aug2))
        loss = ce + self.hp.jsd_weight * jsd
        return StepResult(loss, clean, {"ce": float(ce.detach()), "jsd": float(jsd.detach())})


@METHODS.register("augmix")
class AugMix(AugMixTraining, Method[AugMixHparams]):
    """AugMix: mixtures of augmentation chains + Jensen-Shannon consistency (Hendrycks et al. 2020).

    Two AugMix views of every (cropped and flipped) training image; the clean view and both
    augmented views go through the network as one batch (so BN sees all three); the loss is
    CE on the clean view + jsd_weight * JS(p_clean, p_aug1, p_aug2). The ops exclude those that
    overlap the test corruptions unless all_ops is set (see data/augmix.py).
    With jsd false the network trains on one AugMix view with plain CE.
    """

    Hparams = AugMixHparams
    description = "AugMix chains (no corruption-overlapping ops) + Jensen-Shannon consistency (12)"

    def batch_transform(self, batch: Batch) -> Batch:
        if not self.hp.jsd:
            return Batch(self.augment(batch.x), batch.y, batch.extra)
        return self.with_views(batch)

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        if "views" not in batch.extra:
            return super().training_step(model, batch)
        return self.jsd_step(model, batch)
