"""The normalisation zoo (issue 13): each layer against a direct computation of its paper's
formula, and with every registered architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metabn_bench.methods import build_method
from metabn_bench.models import ARCHS
from metabn_bench.models.norms import IBN, make_norm
from tests.helpers import tiny_train_config

EPS = 1e-5


def standardise(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) with biased statistics over `dims`, written out."""
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS)


def build(name: str, arch: str = "wrn10_1", **hparams: object) -> nn.Module:
    cfg = tiny_train_config(method=name, arch=arch, hparams=hparams)
    torch.manual_seed(0)
    return build_method(cfg, 10, torch.device("cpu")).build_model()


def test_group_norm_is_per_sample_over_channel_groups() -> None:
    x = torch.randn(4, 64, 5, 5, dtype=torch.float64)
    layer = make_norm("gn", groups=32)(64).double()
    groups = x.view(4, 32, 2, 5, 5)
    expected = standardise(groups, (2, 3, 4)).view_as(x)
    torch.testing.assert_close(layer(x), expected)
    # Batch independence: one sample's output is the same alone as within the batch.
    torch.testing.assert_close(layer(x[:1]), layer(x)[:1])


def test_group_norm_groups_divide_narrow_layers() -> None:
    assert make_norm("gn", groups=32)(16).num_groups == 16  # gcd(32, 16)
    assert make_norm("gn", groups=32)(48).num_groups == 16  # gcd(32, 48)
    assert make_norm("gn", groups=32)(128).num_groups == 32


def test_gn_model_has_no_batch_norm() -> None:
    model = build("gn")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


def test_ibn_layer_is_instance_norm_on_half_and_batch_norm_on_the_rest() -> None:
    x = torch.randn(6, 10, 4, 4, dtype=torch.float64)
    layer = IBN(10, ratio=0.5).double().train()
    expected = torch.cat([standardise(x[:, :5], (2, 3)), standardise(x[:, 5:], (0, 2, 3))], dim=1)
    torch.testing.assert_close(layer(x), expected)  # init: unit scale, zero shift
    # In eval mode the IN half still uses the sample's own statistics; the BN half its running ones.
    layer.eval()
    out = layer(x)
    torch.testing.assert_close(out[:, :5], standardise(x[:, :5], (2, 3)))
    bn = layer.bn
    running = (x[:, 5:] - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, -1, 1, 1) + EPS)
    torch.testing.assert_close(out[:, 5:], running)


@pytest.mark.parametrize("arch", ["wrn10_1", "resnet18"])
def test_ibn_replaces_the_first_norm_of_blocks_in_all_but_the_last_stage(arch: str) -> None:
    model = build("ibn", arch)
    widest = max(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    blocks = [m for m in model.modules() if hasattr(m, "conv2") and hasattr(m, "bn1")]
    assert blocks
    for block in blocks:
        if isinstance(block.bn1, IBN):
            assert block.bn1.inorm.num_features + block.bn1.bn.num_features < widest
            assert block.bn1.split == round(0.5 * (block.bn1.split + block.bn1.bn.num_features))
        else:
            assert block.bn1.num_features == widest  # the last stage keeps BatchNorm
        assert not isinstance(block.bn2, IBN)  # only the block's first norm layer
    assert any(isinstance(b.bn1, IBN) for b in blocks)


@pytest.mark.parametrize("name", ["gn", "ibn"])
@pytest.mark.parametrize("arch", ARCHS.names())
def test_zoo_builds_with_every_architecture(name: str, arch: str) -> None:
    model = build(name, arch).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
