"""CrossNorm + SelfNorm (Tang et al., ICCV 2021, "CrossNorm and SelfNorm for Generalization
under Distribution Shifts"), the official CIFAR-10 setting: one CN + SN unit per residual block
at the block output; CrossNorm with crop 'both' in 2 random blocks of a quarter of the batches."""

from __future__ import annotations

from metabn_bench.methods.cnsn_common import CNSNBase, CNSNHparams
from metabn_bench.methods.registry import METHODS


@METHODS.register("cnsn")
class CNSN(CNSNBase[CNSNHparams]):
    """CrossNorm + SelfNorm in every residual block (Tang et al. 2021).

    CrossNorm acts in training only (per batch with probability cn_prob, in active_num random
    blocks); SelfNorm acts at training and test time.
    """

    Hparams = CNSNHparams
    description = "CrossNorm (p 0.25, 2 blocks, crop both) + SelfNorm in every block (post)"
