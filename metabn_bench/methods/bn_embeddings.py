"""Batch Normalization Embeddings (Segu, Tonioni & Tombari, "Batch Normalization Embeddings for
Deep Domain Generalization", 2020): domain-specific BN, domains embedded by their BN statistics,
predictions weighted by the distance of a sample to each domain (models/domain_bn.py).

Source domains. The paper trains on several real source domains (PACS, Office-31, ...); CIFAR
has one, so the domains here are pseudo-domains (our choice), every one made on the device from
the crop + flip batch:
- `augmix_families` (default): clean (crop + flip); geometric (AugMix chains of rotate, shear
  and translate only); tonal (AugMix chains of autocontrast, equalize, posterize and solarize
  only). Both families come from the AugMix ops that do not overlap the 15 test corruptions
  (color, contrast, brightness and sharpness are left out), so the test corruptions stay unseen.
- `validation_corruptions`: clean plus one domain per extra (validation) corruption of
  CIFAR-10-C implemented here (speckle noise, Gaussian blur, spatter, saturate), each at a random
  severity per batch. A run with it has seen corruptions in training: its result rows say so
  (`trained_on`, and the method is reported as `bn_embeddings[validation_corruptions]`).

Evaluation runs every domain branch on the test batch and mixes the branches' probabilities by
inverse Wasserstein distance (sample embeddings by default; `embed: batch` maps the test batch as
a whole). `bn` replaces each branch's statistics with the test batch's (the embeddings stay the
domains' training statistics); `tent` adapts every branch's gamma and beta on the entropy of the
mixture. Cost: D branches of a D-view batch in training (D^2 single-view forwards), D forwards
at evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench.config import TrainConfig
from metabn_bench.data.augmix import AFFINE_OPS, MAX_DEPTH, augmix
from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method, StepResult
from metabn_bench.methods.registry import METHODS
from metabn_bench.methods.shift_proxy import check_proxy, corruption_proxy, validation_corruptions
from metabn_bench.models import Classifier
from metabn_bench.models.domain_bn import EMBEDDINGS, DomainMixture, domain_layers
from metabn_bench.models.norms import NormFactory, make_norm

DOMAIN_SETS = ("augmix_families", "validation_corruptions")
TONAL_OPS = ("autocontrast", "equalize", "posterize", "solarize")
View = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class BNEHparams:
    """BN Embeddings' options."""

    domains: str = "augmix_families"  # augmix_families | validation_corruptions (see above)
    embed: str = "sample"  # sample: instance statistics | batch: the test batch's statistics
    severity: int = 3  # AugMix op levels ~ U(0.1, severity) for the family views
    width: int = 3  # AugMix chains per image
    depth: int = -1  # ops per chain; -1 = uniform in {1, 2, 3}

    def __post_init__(self) -> None:
        if self.domains not in DOMAIN_SETS:
            raise UserError(f"hparams.domains must be one of {', '.join(DOMAIN_SETS)}; "
                            f"got '{self.domains}'")
        if self.embed not in EMBEDDINGS:
            raise UserError(f"hparams.embed must be one of {', '.join(EMBEDDINGS)}; "
                            f"got '{self.embed}'")
        if self.severity < 1 or self.width < 1 or self.depth not in (-1, *range(1, MAX_DEPTH + 1)):
            raise UserError(f"invalid BN Embeddings AugMix hparams: severity >= 1, width >= 1, "
                            f"depth -1 or 1..{MAX_DEPTH}; got {self}")
        if self.domains == "validation_corruptions":
            check_proxy("validation_corruptions")


@METHODS.register("bn_embeddings")
class BNEmbeddings(Method[BNEHparams]):
    """BN Embeddings: per-domain BN, branches mixed by Wasserstein distance (Segu et al., 2020)."""

    Hparams = BNEHparams
    description = ("BN Embeddings: per-domain BN, branches weighted by Wasserstein distance "
                   "(Segu, Tonioni & Tombari, 2020)")

    def __init__(self, cfg: TrainConfig, num_classes: int, device: torch.device) -> None:
        super().__init__(cfg, num_classes, device)
        self.views = self._views()

    def _views(self) -> list[tuple[str, View]]:
        hp = self.hp
        if hp.domains == "validation_corruptions":
            return [("clean", lambda x: x)] + [(n, corruption_proxy(n)) for n in validation_corruptions()]

        def family(ops: tuple[str, ...]) -> View:
            return lambda x: augmix(x, None, hp.severity, hp.width, hp.depth, ops=ops)

        return [("clean", lambda x: x), ("geometric", family(AFFINE_OPS)),
                ("tonal", family(TONAL_OPS))]

    @classmethod
    def trained_on(cls, cfg: TrainConfig) -> str | None:
        """'validation corruptions' when the run's domains include them."""
        return ("validation corruptions"
                if cfg.hparams.get("domains") == "validation_corruptions" else None)

    def domain_names(self) -> list[str]:
        """The source domains, in branch order."""
        return [name for name, _ in self.views]

    def norm_layer(self) -> NormFactory:
        return make_norm("domain_bn", domains=len(self.views), embed=self.hp.embed)

    def build_model(self) -> Classifier:
        return DomainMixture(super().build_model(), len(self.views))

    def batch_transform(self, batch: Batch) -> Batch:
        views = torch.cat([view(batch.x) for _, view in self.views], dim=0)
        return Batch(batch.x, batch.y, {**batch.extra, "views": views}, batch.lr, batch.progress)

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        n, domains = batch.x.shape[0], len(self.views)
        layers = domain_layers(model)
        for layer in layers:
            layer.chunks = domains
        try:
            log_mix = model(self.normalize(batch.extra["views"]))
        finally:
            for layer in layers:
                layer.chunks = None
        loss = F.nll_loss(log_mix, batch.y.repeat(domains))
        logs: dict[str, Any] = {}
        weights = getattr(model, "last_weights", None)
        if weights is not None:  # how much each view's own branch weighs, on average
            own = weights.view(domains, n, domains).diagonal(dim1=0, dim2=2).mean()
            logs["own_domain_weight"] = float(own)
        return StepResult(loss, log_mix[:n], logs)

    def prepare_eval(self, model: nn.Module) -> None:
        for layer in domain_layers(model):
            layer.chunks = None
            layer.freeze_embeddings()
        model.eval()
