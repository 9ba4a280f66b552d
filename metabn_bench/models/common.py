"""What every architecture shares: features -> global average pool -> linear classifier.

`forward_features` returns the last feature map, so class activation maps (CAM, Grad-CAM) work
the same way for every network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metabn_bench.models.norms import UnitFactory


class Classifier(nn.Module):
    """Base class: subclasses define `forward_features` and a `classifier` Linear layer."""

    classifier: nn.Linear

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        features = self.forward_features(x)
        return self.classifier(torch.flatten(features.mean(dim=(2, 3)), 1))

    def init_weights(self) -> None:
        """He-normal convolutions, unit/zero norm affine parameters, zero linear bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if hasattr(m, "reset_norm_parameters"):
                m.reset_norm_parameters()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def make_unit(unit: UnitFactory | None, channels: int, active: bool) -> nn.Module:
    """The per-block extra module, or Identity where the method puts none."""
    return unit(channels) if unit is not None and active else nn.Identity()


def norm_relu(norm: nn.Module, x: Tensor) -> Tensor:
    """relu(norm(x)), or the norm layer's own `forward_activated` where it normalises after the
    activation (Proxy Norm), so every architecture hands it the pre-activation input."""
    fused = getattr(norm, "forward_activated", None)
    return fused(x) if fused is not None else torch.relu(norm(x))
