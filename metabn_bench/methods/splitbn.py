"""Split (auxiliary) BatchNorm (Merchant, Zoph & Cubuk 2020, "Does Data Augmentation Benefit
from Split BatchNorms")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metabn_bench.data.augmix import MAX_DEPTH, augmix
from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method, StepResult
from metabn_bench.methods.registry import METHODS
from metabn_bench.models.norms import NormFactory, make_norm
from metabn_bench.models.split_bn import ROUTES, set_route, set_split


@dataclass(frozen=True)
class SplitBNHparams:
    """Split BN's options; the strong augmentation is AugMix (our choice, no corruption overlap)."""

    eval_bn: str = "main"  # BNs used at test time: main (weak-view statistics) | aux (strong)
    severity: int = 3  # AugMix op levels ~ U(0.1, severity) for the strong view
    width: int = 3  # AugMix chains per image
    depth: int = -1  # ops per chain; -1 = uniform in {1, 2, 3}

    def __post_init__(self) -> None:
        if self.eval_bn not in ROUTES:
            raise UserError(f"hparams.eval_bn must be one of {', '.join(ROUTES)}, "
                            f"got '{self.eval_bn}'")
        if self.severity < 1 or self.width < 1 or self.depth not in (-1, *range(1, MAX_DEPTH + 1)):
            raise UserError(f"invalid split BN AugMix hparams: severity >= 1, width >= 1, depth -1 "
                            f"or 1..{MAX_DEPTH}; got {self}")


@METHODS.register("splitbn")
class SplitBN(Method[SplitBNHparams]):
    """Split BN: main BNs for crop + flip views, auxiliary BNs for AugMix views (Merchant et al. 2020).

    Each step: the weak batch and its AugMix view go through the network as one batch; in every
    BN layer the weak half uses the main BN and the strong half the auxiliary BN (own statistics
    and affine parameters; convolutions shared); loss = CE(weak) + CE(strong). Evaluation
    uses the BNs named by eval_bn.
    """

    Hparams = SplitBNHparams
    description = "main BNs for crop+flip, auxiliary BNs for AugMix views; eval with main BNs"

    def norm_layer(self) -> NormFactory:
        return make_norm("split_bn")

    def batch_transform(self, batch: Batch) -> Batch:
        hp = self.hp
        strong = augmix(batch.x, None, hp.severity, hp.width, hp.depth)
        return Batch(batch.x, batch.y, {**batch.extra, "strong": strong})

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        n = batch.x.shape[0]
        x = torch.cat([batch.x, batch.extra["strong"]], dim=0)
        set_split(model, n)
        try:
            logits = model(self.normalize(x))
        finally:
            set_split(model, None)
        weak, strong = logits[:n].float(), logits[n:].float()
        ce_main, ce_aux = F.cross_entropy(weak, batch.y), F.cross_entropy(strong, batch.y)
        return StepResult(ce_main + ce_aux, logits[:n],
                          {"ce_main": float(ce_main.detach()), "ce_aux": float(ce_aux.detach())})

    def prepare_eval(self, model: nn.Module) -> None:
        set_split(model, None)
        set_route(model, self.hp.eval_bn)
        model.eval()
