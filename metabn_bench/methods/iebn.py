"""Instance Enhancement Batch Normalization (Liang et al., "Instance Enhancement Batch
Normalization: an Adaptive Regulator of Batch Noise", AAAI 2020).

Every norm layer is IEBN: BatchNorm whose per-channel scale is multiplied, per sample, by a
sigmoid gate of a per-channel linear transform of the sample's globally pooled standardised
features; the instance-specific gate counters the noise of batch statistics. In eval mode the
standardisation uses running statistics and the gate the test sample alone; `bn` replaces the
statistics with the test batch's, `tent` adapts gamma and beta (the gate stays as trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Method
from metabn_bench.methods.registry import METHODS
from metabn_bench.models.norms import NormFactory, make_norm


@dataclass(frozen=True)
class IEBNHparams:
    """IEBN's options: the gate's initial transform (our choice: w = 0, b = -1, so every gate
    starts at sigmoid(-1) = 0.27 for every sample and learns its instance dependence)."""

    gate_weight: float = 0.0
    gate_bias: float = -1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gate_weight) and math.isfinite(self.gate_bias)):
            raise UserError("hparams.gate_weight and hparams.gate_bias must be finite numbers, "
                            f"got {self.gate_weight!r} and {self.gate_bias!r}")


@METHODS.register("iebn")
class IEBNMethod(Method[IEBNHparams]):
    """IEBN: BN with a per-sample sigmoid channel gate (Liang et al., AAAI 2020)."""

    Hparams = IEBNHparams
    description = "IEBN: BN scaled by a per-sample channel gate (Liang et al., AAAI 2020)"

    def norm_layer(self) -> NormFactory:
        return make_norm("iebn", gate_weight=self.hp.gate_weight, gate_bias=self.hp.gate_bias)
