"""CrossNorm alone (Tang et al., ICCV 2021), the official CIFAR-10 setting: one unit per
residual block at the block output, no crop, CrossNorm in 2 blocks of half the batches."""

from __future__ import annotations

from dataclasses import dataclass

from metabn_bench.methods.cnsn_common import CNSNBase, CNSNHparams
from metabn_bench.methods.registry import METHODS


@dataclass(frozen=True)
class CrossNormHparams(CNSNHparams):
    """CrossNorm's options (official CIFAR-10 CN setting)."""

    position: str = "post"  # unit at each residual block's input ('pre') or output ('post')
    crop: str = "neither"  # neither | style | content | both
    cn_prob: float = 0.5  # probability that a training batch uses CrossNorm at all
    active_num: int = 2  # units with CrossNorm switched on in such a forward


@METHODS.register("crossnorm")
class CrossNorm(CNSNBase[CrossNormHparams]):
    """CrossNorm: swap channel statistics between samples in random blocks (Tang et al. 2021).

    Training only; at test time the network is the plain one (the units are identities).
    """

    Hparams = CrossNormHparams
    description = "CrossNorm (p 0.5, 2 blocks, no crop) in every block (post); training only"
    use_selfnorm = False
