"""The normalisation zoo (issue 13): each layer against a direct computation of its paper's
formula, and with every registered architecture."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize("name", ["gn", "ibn", "bgn", "iebn", "proxy_norm", "cbn", "mbn", "bn_embeddings"])
@pytest.mark.parametrize("arch", ARCHS.names())
def test_zoo_builds_with_every_architecture(name: str, arch: str) -> None:
    model = build(name, arch).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def bgn_layer(channels: int, groups: int) -> nn.Module:
    return make_norm("bgn", groups=groups)(channels).double().train()


def test_bgn_with_one_group_normalises_the_batch_jointly() -> None:
    x = torch.randn(5, 8, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(bgn_layer(8, 1)(x), standardise(x, (0, 1, 2, 3)))


def test_bgn_with_one_channel_per_group_is_batch_norm() -> None:
    x = torch.randn(5, 8, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(bgn_layer(8, 8)(x), standardise(x, (0, 2, 3)))
    bn = nn.BatchNorm2d(8).double().train()
    torch.testing.assert_close(bgn_layer(8, 8)(x), bn(x))


def test_bgn_groups_pool_the_batch_and_their_channels() -> None:
    x = torch.randn(5, 8, 4, 4, dtype=torch.float64)
    layer = bgn_layer(8, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.5, 2.0, 8))
        layer.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    groups = standardise(x.view(5, 2, 4, 4, 4), (0, 2, 3, 4)).view_as(x)
    expected = groups * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)
    # Eval mode: the running per-group statistics (one update with momentum 0.1 from 0 and 1).
    layer.eval()
    flat = x.view(5, 2, -1).transpose(0, 1).reshape(2, -1)
    mean = 0.1 * flat.mean(1)
    var = 0.9 + 0.1 * flat.var(1, unbiased=True)
    running = (x.view(5, 2, -1) - mean.view(1, 2, 1)) / torch.sqrt(var.view(1, 2, 1) + EPS)
    expected = running.view_as(x) * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)


def test_bn_protocol_adapts_bgn_to_test_batch_group_statistics() -> None:
    from metabn_bench.evaluation.protocols import make_protocol

    layer = bgn_layer(8, 2).eval()
    x = torch.randn(5, 8, 4, 4, dtype=torch.float64) * 3 + 1
    protocol = make_protocol("bn", layer, layer)
    torch.testing.assert_close(protocol.predict(x),
                               standardise(x.view(5, 2, 4, 4, 4), (0, 2, 3, 4)).view_as(x))


def test_iebn_at_init_is_batch_norm_times_its_gate() -> None:
    x = torch.randn(6, 8, 4, 4, dtype=torch.float64)
    layer = make_norm("iebn")(8).double().train()
    bn = nn.BatchNorm2d(8).double().train()
    torch.testing.assert_close(layer(x), bn(x) * torch.sigmoid(torch.tensor(-1.0)))
    torch.testing.assert_close(layer.running_mean, bn.running_mean)  # same statistics kept
    torch.testing.assert_close(layer.running_var, bn.running_var)


def test_iebn_gate_is_per_sample_from_the_pooled_standardised_features() -> None:
    x = torch.randn(6, 8, 4, 4, dtype=torch.float64)
    layer = make_norm("iebn")(8).double().train()
    with torch.no_grad():
        for p in (layer.weight, layer.bias, layer.gate_weight, layer.gate_bias):
            p.copy_(torch.randn(8, dtype=torch.float64))
    x_hat = standardise(x, (0, 2, 3))
    gate = torch.sigmoid(layer.gate_weight * x_hat.mean(dim=(2, 3)) + layer.gate_bias)
    expected = x_hat * (layer.weight * gate)[:, :, None, None] + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)
    # Eval: running statistics; the gate still comes from each sample alone.
    layer.eval()
    x_hat = (x - layer.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        layer.running_var.view(1, -1, 1, 1) + EPS)
    gate = torch.sigmoid(layer.gate_weight * x_hat.mean(dim=(2, 3)) + layer.gate_bias)
    expected = x_hat * (layer.weight * gate)[:, :, None, None] + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer(x[:2]), layer(x)[:2])


def test_proxy_norm_normalises_the_activation_with_the_gaussian_proxy_moments() -> None:
    layer = make_norm("proxy_norm", groups=4)(8).double()
    with torch.no_grad():
        for p in (layer.weight, layer.bias, layer.proxy_shift, layer.proxy_scale):
            p.copy_(0.5 * torch.randn(8, dtype=torch.float64))
    x = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    y = standardise(x.view(3, 4, 2, 4, 4), (2, 3, 4)).view_as(x)
    y = y * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    # The proxy as the paper samples it: X~ ~ N(beta~, (1 + gamma~)^2), relu(gamma * X~ + beta).
    xi = torch.randn(2_000_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        proxy = layer.proxy_shift + (1 + layer.proxy_scale) * xi
        act = torch.relu(layer.weight * proxy + layer.bias)
    mean, var = act.mean(0), act.var(0)
    expected = (torch.relu(y) - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + EPS)
    with torch.no_grad():
        torch.testing.assert_close(layer.forward_activated(x), expected, atol=5e-3, rtol=5e-3)
        torch.testing.assert_close(layer(x), y)  # no activation follows: GroupNorm + affine


def test_proxy_norm_output_of_a_sample_does_not_depend_on_the_batch() -> None:
    model = build("proxy_norm").train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = torch.randn(8, 3, 32, 32)
    alone = model(x[:1])
    torch.testing.assert_close(model(x)[:1], alone, atol=1e-5, rtol=1e-5)
    other = torch.cat([x[:1], 5 * torch.randn(7, 3, 32, 32) + 2])
    torch.testing.assert_close(model(other)[:1], alone, atol=1e-5, rtol=1e-5)
    model.eval()
    torch.testing.assert_close(model(x)[:1], alone, atol=1e-5, rtol=1e-5)  # eval = train


def test_proxy_norm_with_layer_norm_uses_one_group() -> None:
    assert make_norm("proxy_norm", norm="ln")(64).groups == 1


def test_evaluate_records_bn_as_not_applicable_for_gn(tmp_path, corrupted_set) -> None:
    from metabn_bench.evaluation.evaluate import evaluate
    from metabn_bench.reporting.report import build_report, collect
    from metabn_bench.training.loop import train

    run_dir = tmp_path / "gn"
    train(tiny_train_config(method="gn"), run_dir, progress=False)
    rows = evaluate(run_dir, corrupted_set, ("none", "bn"), progress=False)
    applied = [r for r in rows if r["protocol"] == "none"]
    na = [r for r in rows if r["protocol"] == "bn"]
    assert len(na) == len(applied) > 1
    assert all("applicable" not in r and r["error"] is not None for r in applied)  # unchanged
    for r in na:
        assert r["applicable"] is False and r["errors"] is None and r["error"] is None
        assert "protocol 'bn' is not applicable" in r["reason"] and "BatchNorm2d" in r["reason"]
    found = collect([run_dir])
    assert {r["protocol"] for r in found.rows} == {"none"}  # n/a rows enter no metric
    assert len(found.not_applicable) == len(na)
    assert [r["protocol"] for r in build_report(found.rows, {}).rows] == ["none"]
    assert evaluate(run_dir, corrupted_set, ("none", "bn"), progress=False) == rows  # no rework


def test_evaluate_command_shows_not_applicable_protocols(tmp_path, corrupted_set) -> None:
    from typer.testing import CliRunner

    from metabn_bench.cli import app
    from metabn_bench.training.loop import train

    run_dir = tmp_path / "proxy"
    train(tiny_train_config(method="proxy_norm"), run_dir, progress=False)
    result = CliRunner().invoke(app, ["evaluate", str(run_dir), "--corrupted", str(corrupted_set),
                                      "--adapt", "none,tent", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert re.search(r"\| proxy_norm \| tent +\|.*n/a \[1\]", result.output), result.output
    assert "[1] n/a: protocol 'tent' is not applicable" in result.output
