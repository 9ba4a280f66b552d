"""SelfNorm alone (Tang et al., ICCV 2021), the official CIFAR-10 setting: one unit per
residual block at the block input."""

from __future__ import annotations

from dataclasses import dataclass

from metabn_bench.methods.cnsn_common import CNSNBase, check_position
from metabn_bench.methods.registry import METHODS


@dataclass(frozen=True)
class SelfNormHparams:
    """SelfNorm's options (official CIFAR-10 SN setting)."""

    position: str = "pre"  # unit at each residual block's input ('pre') or output ('post')

    def __post_init__(self) -> None:
        check_position(self.position)


@METHODS.register("selfnorm")
class SelfNorm(CNSNBase[SelfNormHparams]):
    """SelfNorm: per-sample channel gates from the sample's own statistics (Tang et al. 2021).

    Acts at training and at test time.
    """

    Hparams = SelfNormHparams
    description = "SelfNorm gates in every block (pre); active at train and test time"
    use_crossnorm = False
