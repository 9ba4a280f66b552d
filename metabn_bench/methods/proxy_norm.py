"""Proxy Normalization (Labatie et al., "Proxy-Normalizing Activations to Match Batch
Normalization while Removing Batch Dependence", NeurIPS 2021), with GroupNorm or LayerNorm.

Every norm layer is GroupNorm (or LayerNorm) + affine, and where the architecture applies ReLU
after it, the activation is normalised per channel with the moments of a Gaussian proxy
(models/proxy_norm.py). No statistic depends on the batch, so training and evaluation do the
same computation at any batch size; the model has no BatchNorm, so `bn` and `tent` do not apply
(`evaluate` records their rows as not applicable, with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Method
from metabn_bench.methods.registry import METHODS
from metabn_bench.models.norms import NormFactory, make_norm


@dataclass(frozen=True)
class ProxyNormHparams:
    """Proxy Norm's options."""

    norm: str = "gn"  # the batch-independent norm: gn (GroupNorm) | ln (LayerNorm, one group)
    groups: int = 32  # GroupNorm's groups; gcd(groups, C) where it does not divide C (our choice)

    def __post_init__(self) -> None:
        if self.norm not in ("gn", "ln"):
            raise UserError(f"hparams.norm must be one of gn, ln; got '{self.norm}'")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise UserError(f"hparams.groups must be an integer >= 1, got {self.groups!r}")


@METHODS.register("proxy_norm")
class ProxyNormMethod(Method[ProxyNormHparams]):
    """Proxy Norm: GN/LN with proxy-normalised activations (Labatie et al., NeurIPS 2021)."""

    Hparams = ProxyNormHparams
    description = "Proxy Norm: GN + proxy-normalised ReLU, batch-independent (Labatie et al., NeurIPS 2021)"

    def norm_layer(self) -> NormFactory:
        hp = self.hp
        return make_norm("proxy_norm", norm=hp.norm, groups=hp.groups)
