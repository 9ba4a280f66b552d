"""What `selfnorm`, `crossnorm` and `cnsn` share (Tang et al., ICCV 2021, "CrossNorm and SelfNorm
for Generalization under Distribution Shifts"): a unit in every residual block and the CrossNorm
switching per training batch. Each method (its own file) sets its official CIFAR defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import nn

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method, StepResult
from metabn_bench.models.cnsn import CROPS, CNSNUnit, CrossNormConfig, activate_crossnorm, cnsn_units
from metabn_bench.models.norms import UNIT_POSITIONS, UnitFactory

# The options of a CrossNorm / SelfNorm method (CNSN, CrossNorm, SelfNorm: each its own).
CnH = TypeVar("CnH")


def check_position(position: str) -> None:
    """A UserError unless `position` is a valid unit position ('pre' or 'post')."""
    if position not in UNIT_POSITIONS:
        raise UserError(f"hparams.position must be one of {', '.join(UNIT_POSITIONS)}, "
                        f"got '{position}'")


@dataclass(frozen=True)
class CNSNHparams:
    """CrossNorm + SelfNorm options (the official CIFAR-10 CNSN setting)."""

    position: str = "post"  # unit at each residual block's input ('pre') or output ('post')
    crop: str = "both"  # CrossNorm crop: neither | style | content | both
    cn_prob: float = 0.25  # probability that a training batch uses CrossNorm at all
    active_num: int = 2  # units with CrossNorm switched on in such a forward
    beta: float = 1.0  # crop box area ratio ~ Beta(beta, beta), redrawn until >= 10 %

    def __post_init__(self) -> None:
        check_position(self.position)
        if self.crop not in CROPS:
            raise UserError(f"hparams.crop must be one of {', '.join(CROPS)}, got '{self.crop}'")
        if not 0 <= self.cn_prob <= 1 or self.active_num < 1 or self.beta <= 0:
            raise UserError(f"hparams.cn_prob must be in [0, 1], active_num >= 1 and beta > 0; "
                            f"got cn_prob={self.cn_prob}, active_num={self.active_num}, "
                            f"beta={self.beta}")


class CNSNBase(Method[CnH]):
    """CrossNorm and/or SelfNorm units in every residual block (Tang et al. 2021).

    Per training batch, with probability cn_prob, CrossNorm is switched on in active_num
    randomly chosen units for that one forward; SelfNorm acts in every forward, train and test.
    """

    Hparams = CNSNHparams
    use_crossnorm: ClassVar[bool] = True
    use_selfnorm: ClassVar[bool] = True

    def block_unit(self) -> tuple[UnitFactory | None, str]:
        cn = (CrossNormConfig(self.hp.crop, self.hp.beta) if self.use_crossnorm else None)
        sn = self.use_selfnorm

        def make(channels: int) -> nn.Module:
            return CNSNUnit(channels, cn, sn)

        return make, self.hp.position

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        logs: dict[str, float] = {}
        if self.use_crossnorm:
            units = cnsn_units(model)
            use = float(torch.rand(())) < self.hp.cn_prob
            if use:
                activate_crossnorm(units, min(self.hp.active_num, len(units)))
            logs["crossnorm"] = float(use)
        out = super().training_step(model, batch)
        out.logs.update(logs)
        return out
