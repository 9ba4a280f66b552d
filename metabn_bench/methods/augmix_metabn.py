"""AugMix + Meta-BN: AugMix's training (Hendrycks et al., ICLR 2020) with Meta BatchNorm's
auxiliary corrections and training scheme (reconstructed from Tsai, NTHU master's thesis,
2021; see methods/metabn.py). The `augmix_metabn` method.

It is built for one comparison, AugMix + Meta-BN against AugMix, so it departs from each
parent only where the other one needs it:

- the views are AugMix's: two AugMix views per image, made with AugMix's options and defaults
  (`severity`, `width`, `depth`, `alpha`, `all_ops`; the same code as the `augmix` method);
- the meta-train pass is AugMix's step unchanged: the clean view and both views through the
  network as one batch (BN's statistics and running statistics over all three), loss
  L_tr = CE(clean) + jsd_weight * JS(p_clean, p_aug1, p_aug2) (jsd_weight 12);
- the meta-test views are the same two AugMix views (they are Meta-BN's shift proxy, so there
  is no `proxy` option), normalised with the statistics of the clean view alone, recorded by a
  pass without gradient (under theta' in episodic mode, as `metabn` re-records them), so that
  the augmentation's shift survives normalisation and the auxiliary nets must correct it;
  L_te = CE of both views (the mean over the 2N images);
- the update minimises w_tr L_tr(theta) + w_te L_te(theta') exactly as `metabn` does, in every
  training mode (`episodic`: theta' is one inner SGD step on L_tr; `joint`: theta' = theta;
  `post_hoc`: a frozen vanilla backbone in eval mode, every pass with its running statistics).

Meta-BN's options and defaults are `metabn`'s (its control `meta_test_stats=own` normalises
the views with their own batch's statistics instead, with no recording pass). With `bound=0`
(no corrections) and `meta_test_weight=0` the loss is AugMix's loss, the same value, gradient
and running statistics on the same views (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metabn_bench.errors import UserError
from metabn_bench.methods.augmix import AugMixTraining, AugMixViewHparams
from metabn_bench.methods.base import Batch, StepResult
from metabn_bench.methods.metabn import MetaBN, MetaBNCommonHparams
from metabn_bench.methods.registry import METHODS


@dataclass(frozen=True)
class AugMixMetaBNHparams(MetaBNCommonHparams, AugMixViewHparams):
    """AugMix's view options and Meta-BN's options, each with its own method's defaults."""

    jsd_weight: float = 12.0  # weight of the Jensen-Shannon term (AugMix's)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.jsd_weight < 0:
            raise UserError(f"invalid AugMix hparams: jsd_weight >= 0; got {self.jsd_weight}")


@METHODS.register("augmix_metabn")
class AugMixMetaBN(AugMixTraining, MetaBN):
    """AugMix + Meta-BN: AugMix's JSD loss as meta-train loss, its views as meta-test proxy.

    AugMix: Hendrycks et al., ICLR 2020; Meta-BN: reconstructed from Tsai, NTHU thesis, 2021
    (see the module docstring for how the views enter each term).
    """

    Hparams = AugMixMetaBNHparams
    description = "AugMix's JSD training with Meta-BN layers; the AugMix views are the meta-test proxy"

    # The meta-train batch mixes clean and augmented images: the clean view's statistics are
    # recorded by a pass of their own.
    meta_train_records_reference = False

    def check_meta_test_view(self) -> None:
        """The meta-test views are AugMix's, validated by AugMixViewHparams."""

    def batch_transform(self, batch: Batch) -> Batch:
        return self.with_views(batch)

    def meta_test_view(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Both AugMix views as one batch (normalised), each with its image's label."""
        views = batch.extra["views"]
        return self.normalize(torch.cat(views, dim=0)), batch.y.repeat(len(views))

    def meta_train_loss(self, model: nn.Module, batch: Batch) -> StepResult:
        """AugMix's step: clean + both views in one batch, CE(clean) + jsd_weight * JS."""
        return self.jsd_step(model, batch)

