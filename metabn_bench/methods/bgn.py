"""Batch Group Normalization (Zhou et al., "Batch Group Normalization", arXiv, 2020).

Every norm layer is BGN: the channels form G groups and each group is normalised with its mean
and variance over the batch and its (C/G, H, W) features, then scaled and shifted per channel.
G trades BN (G = C) against normalising the whole batch as one group (G = 1); more features per
statistic keep it stable at small batches. In eval mode it uses running per-group statistics; the
`bn` protocol replaces them with the test batch's per-group statistics, and `tent` adapts the
per-channel scale and shift with test-batch per-group statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Method
from metabn_bench.methods.registry import METHODS
from metabn_bench.models.norms import NormFactory, make_norm


@dataclass(frozen=True)
class BGNHparams:
    """BGN's options."""

    # Groups per layer (our choice: 16, every channel count of the registered networks is a
    # multiple of it, so WRN-10-1's 16-channel stage has one channel per group); a layer whose
    # channel count G does not divide gets gcd(G, C) groups (our choice).
    groups: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise UserError(f"hparams.groups must be an integer >= 1, got {self.groups!r}")


@METHODS.register("bgn")
class BatchGroupNormMethod(Method[BGNHparams]):
    """Batch Group Normalization: per-group statistics over the batch (Zhou et al., 2020)."""

    Hparams = BGNHparams
    description = "BGN: BN statistics over channel groups x batch (Zhou et al., 2020)"

    def norm_layer(self) -> NormFactory:
        return make_norm("bgn", groups=self.hp.groups)
