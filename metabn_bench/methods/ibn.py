"""IBN-Net-a (Pan, Luo, Shi & Tang, "Two at Once: Enhancing Learning and Generalization
Capacities via IBN-Net", ECCV 2018) as a reference row.

IBN-Net-a puts InstanceNorm on half the channels of the first normalisation layer of every
residual block in the first stages (ResNet-50's conv2_x to conv4_x, not conv5_x) and keeps
BatchNorm everywhere else. Architecture-independent rule here (our choice): a block's first norm
layer (`bn1`) becomes an IBN layer when its channel count is below the network's widest, which
is every stage but the last in every registered architecture. For the pre-activation networks
(WRN, PreAct ResNet) `bn1` normalises the block input, before the first convolution (our choice:
the paper only has post-activation blocks). The IN half uses per-sample statistics at test time;
the BN half is adapted by the `bn` and `tent` protocols like any BatchNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Method
from metabn_bench.methods.registry import METHODS
from metabn_bench.models import Classifier
from metabn_bench.models.norms import IBN


@dataclass(frozen=True)
class IBNHparams:
    """IBN-Net-a's options: half the channels to IN (the paper's ratio)."""

    ratio: float = 0.5  # share of a layer's channels normalised by InstanceNorm

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise UserError(f"hparams.ratio must be in (0, 1), got {self.ratio!r}")


def ibn_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks whose first norm layer IBN-Net-a replaces (all stages but the last)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    widest = max(m.num_features for m in norms)
    return [m for m in model.modules()
            if not isinstance(m, Classifier) and isinstance(getattr(m, "bn1", None), nn.BatchNorm2d)
            and m.bn1.num_features < widest]


@METHODS.register("ibn")
class IBNNet(Method[IBNHparams]):
    """IBN-Net-a: IN on half the channels of early blocks' first norm (Pan et al., ECCV 2018).

    Every stage but the last; the rest of the network and the recipe are vanilla's.
    """

    Hparams = IBNHparams
    description = "IBN-Net-a: IN on half the channels of early blocks' first norm (Pan et al., ECCV 2018)"

    def build_model(self) -> Classifier:
        model = super().build_model()
        # Norm layers hold no random state at init, so swapping them after the build leaves the
        # convolutions' initialisation (and the seeded RNG stream) as the BN network's.
        for block in ibn_blocks(model):
            old = block.bn1
            block.bn1 = IBN(old.num_features, self.hp.ratio, old.eps, old.momentum)
        return model
