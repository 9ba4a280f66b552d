"""Every architecture takes its norm layer from the factory and exposes CAM features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metabn_bench.models import ARCHS, build_model, count_parameters


class CountingNorm(nn.BatchNorm2d):
    made = 0

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        CountingNorm.made += 1


@pytest.mark.parametrize("arch", ARCHS.names())
def test_arch_uses_the_injected_norm(arch: str) -> None:
    CountingNorm.made = 0
    model = build_model(arch, 7, norm=CountingNorm)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, CountingNorm) for m in norms)
    assert CountingNorm.made == len(norms)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    features = model.forward_features(x)
    assert features.dim() == 4 and features.shape[1] == model.classifier.in_features
    assert model(x).shape == (2, 7)


def test_units_go_in_every_block() -> None:
    made = []

    def unit(channels: int) -> nn.Module:
        made.append(channels)
        return nn.Identity()

    build_model("wrn40_2", 10, unit=unit, unit_position="post")
    assert len(made) == 18  # one per residual block of WRN-40-2
    made.clear()
    build_model("resnet9_16", 10, unit=unit, unit_position="pre")
    assert made == [32, 128]  # ResNet-9 has two residual units, after stages 1 and 3


def test_parameter_counts_match_the_literature() -> None:
    assert count_parameters(build_model("wrn40_2", 10)) == pytest.approx(2.24e6, rel=0.01)
    assert count_parameters(build_model("resnet18", 10)) == pytest.approx(11.17e6, rel=0.01)
    assert count_parameters(build_model("resnet9", 10)) == pytest.approx(6.57e6, rel=0.01)
