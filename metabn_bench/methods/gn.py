"""Group Normalization (Wu & He, "Group Normalization", ECCV 2018) as a reference row.

Every norm layer of the architecture is a GroupNorm: statistics per sample over groups of C/G
channels, so training and evaluation do the same computation at any batch size. The model has
no BatchNorm statistics, so the `bn` and `tent` test-time protocols do not apply to it:
`evaluate` records their rows as not applicable, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Method
from metabn_bench.methods.registry import METHODS
from metabn_bench.models.norms import NormFactory, make_norm


@dataclass(frozen=True)
class GNHparams:
    """Group Norm's options: the paper's G = 32 (its Table 3 default)."""

    groups: int = 32  # groups per layer; gcd(groups, C) where G does not divide C (our choice)

    def __post_init__(self) -> None:
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise UserError(f"hparams.groups must be an integer >= 1, got {self.groups!r}")


@METHODS.register("gn")
class GroupNormMethod(Method[GNHparams]):
    """Vanilla recipe with GroupNorm in place of BatchNorm (Wu & He, ECCV 2018)."""

    Hparams = GNHparams
    description = "GroupNorm (G=32) in place of BN; batch-independent (Wu & He, ECCV 2018)"

    def norm_layer(self) -> NormFactory:
        return make_norm("gn", groups=self.hp.groups)
