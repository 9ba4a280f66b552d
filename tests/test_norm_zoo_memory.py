"""The zoo's norms with a memory of past batches (issue 13): CBN and MBN against direct
computations of their papers' formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metabn_bench.methods import Batch, build_method
from metabn_bench.models import ARCHS
from metabn_bench.models.cross_iteration_bn import CrossIterationBN, cbn_layers
from metabn_bench.models.memorized_bn import MemorizedBN, mbn_layers
from tests.helpers import tiny_train_config

EPS = 1e-5


def standardise(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + EPS)


def moments(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and second moment E[y^2], written out."""
    return y.mean(dim=(0, 2, 3)), (y * y).mean(dim=(0, 2, 3))


def build(name: str, arch: str = "wrn10_1", **hparams: object) -> tuple[object, nn.Module]:
    cfg = tiny_train_config(method=name, arch=arch, hparams=hparams)
    torch.manual_seed(0)
    method = build_method(cfg, 10, torch.device("cpu"))
    return method, method.build_model()


# -- CBN ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("window", [1, 4])
def test_cbn_with_window_one_or_an_empty_window_is_batch_norm(window: int) -> None:
    x = torch.randn(6, 8, 4, 4, dtype=torch.float64) * 2 + 1
    cbn = CrossIterationBN(8, window=window).double().train()
    bn = nn.BatchNorm2d(8).double().train()
    torch.testing.assert_close(cbn(x), bn(x))  # window 4: nothing memorised yet
    torch.testing.assert_close(cbn.running_mean, bn.running_mean)
    torch.testing.assert_close(cbn.running_var, bn.running_var)
    if window == 1:
        x2 = torch.randn(6, 8, 4, 4, dtype=torch.float64)
        torch.testing.assert_close(cbn(x2), bn(x2))  # and stays BN


def test_cbn_pools_the_window_statistics() -> None:
    """Uncompensated: mean over the window of the means and of max(second moment, mean^2)."""
    cbn = CrossIterationBN(5, window=3, compensate=False).double().train()
    batches = [torch.randn(4, 5, 3, 3, dtype=torch.float64) * (i + 1) + i for i in range(4)]
    for x in batches[:3]:
        out = cbn(x)
    stats = [moments(x) for x in batches[:3]]
    mu = torch.stack([m for m, _ in stats]).mean(0)
    nu = torch.stack([s for _, s in stats]).mean(0)
    torch.testing.assert_close(out, standardise(batches[2], mu, nu - mu * mu))
    out = cbn(batches[3])  # the oldest batch leaves the window
    stats = [moments(x) for x in batches[1:]]
    mu = torch.stack([m for m, _ in stats]).mean(0)
    nu = torch.stack([s for _, s in stats]).mean(0)
    torch.testing.assert_close(out, standardise(batches[3], mu, nu - mu * mu))


def conv_and_cbn(compensate: bool = True) -> tuple[nn.Conv2d, CrossIterationBN]:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1, bias=False).double()
    cbn = CrossIterationBN(6, window=2, compensate=compensate).double().train()
    cbn.producer = (conv,)
    return conv, cbn


def test_cbn_gradients_are_those_of_the_batch_moments_wrt_the_convolution() -> None:
    conv, cbn = conv_and_cbn()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    cbn(conv(x))
    past = cbn.past[0]
    y = conv(x).detach()
    m = y.numel() // y.shape[1]
    # d mean_c / d theta_c = mean patch; d E[y_c^2] / d theta_c = 2/m sum y_c * patch:
    # the weight gradient of the convolution for upstream gradients 1/m and 2y/m.
    ones = torch.full_like(y, 1.0 / m)
    grad = torch.nn.grad.conv2d_weight
    torch.testing.assert_close(past.grad_mean, grad(x, conv.weight.shape, ones, padding=1))
    torch.testing.assert_close(past.grad_square, grad(x, conv.weight.shape, 2 * y / m, padding=1))


def test_cbn_compensation_tracks_a_small_weight_change() -> None:
    """After a small weight change, the compensated statistics of the previous batch are close
    to a direct recomputation under the new weights; the stale ones are not."""
    conv, cbn = conv_and_cbn()
    x = torch.randn(8, 3, 6, 6, dtype=torch.float64)
    cbn(conv(x))
    delta = 0.005 * torch.randn_like(conv.weight)
    with torch.no_grad():
        conv.weight.add_(delta)
    direct_mean, direct_square = moments(F.conv2d(x, conv.weight.detach(), padding=1))
    mean, square = cbn.compensated(cbn.past[0], conv.weight)
    stale_mean, stale_square = cbn.past[0].mean, cbn.past[0].square
    torch.testing.assert_close(mean, direct_mean)  # the mean is linear in the weights: exact
    assert (stale_mean - direct_mean).abs().max() > 1e-3
    error = (square - direct_square).abs().max()
    stale = (stale_square - direct_square).abs().max()
    assert error < 0.1 * stale, (float(error), float(stale))
    # E[y^2] is quadratic in the weights: what the first-order term leaves is E[conv(x, delta)^2].
    torch.testing.assert_close(direct_square - square, moments(F.conv2d(x, delta, padding=1))[1])
    # The uncompensated variant keeps the stale statistics.
    conv_u, cbn_u = conv_and_cbn(compensate=False)
    cbn_u(conv_u(x))
    assert cbn_u.past[0].grad_mean is None
    torch.testing.assert_close(cbn_u.compensated(cbn_u.past[0], conv_u.weight)[1],
                               cbn_u.past[0].square)


@pytest.mark.parametrize("arch", ARCHS.names())
def test_cbn_links_every_layer_to_the_convolution_before_it(arch: str) -> None:
    _, model = build("cbn", arch)
    layers = cbn_layers(model)
    assert layers and all(layer.producer for layer in layers)
    for layer in layers:
        assert layer.producer[0].out_channels == layer.num_features


def test_cbn_method_burn_in_then_window_and_plain_bn_at_evaluation() -> None:
    method, model = build("cbn", burn_in=0.5)
    model.train()
    x = torch.rand(8, 3, 16, 16)
    y = torch.randint(0, 10, (8,))
    method.training_step(model, Batch(x, y, progress=0.1))  # burn-in: BN, nothing memorised
    assert all(not layer.past for layer in cbn_layers(model))
    method.training_step(model, Batch(x, y, progress=0.6))
    assert all(len(layer.past) == 1 and layer.past[0].grad_square is not None
               for layer in cbn_layers(model))
    method.prepare_eval(model)
    layer = cbn_layers(model)[0]
    layer.train()  # as Tent puts it: test-batch statistics, window 1
    inp = torch.randn(4, layer.num_features, 5, 5)
    bn = nn.BatchNorm2d(layer.num_features).train()
    bn.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(inp), bn(inp))


# -- MBN ----------------------------------------------------------------------------------------

def test_mbn_uniform_memory_normalises_with_the_pooled_batches() -> None:
    """Equal batches and uniform weights: the memorised mean and variance are those of the
    concatenated batches; the running statistics (used in eval) are the same numbers."""
    mbn = MemorizedBN(5, memory=3).double().train()
    batches = [torch.randn(4, 5, 3, 3, dtype=torch.float64) * (i + 1) + i for i in range(4)]
    for x in batches:
        out = mbn(x)
    pooled = torch.cat(batches[1:])
    mean = pooled.mean(dim=(0, 2, 3))
    var = pooled.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(out, standardise(batches[3], mean, var))
    torch.testing.assert_close(mbn.running_mean, mean)
    torch.testing.assert_close(mbn.running_var, var)
    mbn.eval()
    torch.testing.assert_close(mbn(batches[0]), standardise(batches[0], mean, var))


def test_mbn_linear_weights_favour_the_newest_batch() -> None:
    mbn = MemorizedBN(3, memory=2, weighting="linear").double().train()
    a, b = (torch.randn(4, 3, 2, 2, dtype=torch.float64) + s for s in (0.0, 3.0))
    mbn(a)
    out = mbn(b)
    (ma, va), (mb, vb) = ((t.mean(dim=(0, 2, 3)), t.var(dim=(0, 2, 3), unbiased=False))
                          for t in (a, b))
    mean = 2 / 3 * mb + 1 / 3 * ma
    var = 2 / 3 * (vb + mb**2) + 1 / 3 * (va + ma**2) - mean**2
    torch.testing.assert_close(out, standardise(b, mean, var))


def test_mbn_double_forward_remeasures_the_last_batch_under_the_updated_weights() -> None:
    method, model = build("mbn")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x1, x2 = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    y = torch.randint(0, 10, (8,))
    out = method.training_step(model, Batch(x1, y))
    opt.zero_grad()
    out.loss.backward()
    opt.step()  # the weights change after batch 1
    first = mbn_layers(model)[0]
    seen: list[torch.Tensor] = []
    handle = first.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    method.training_step(model, Batch(x2, y))  # the second forward of x1, then x2
    handle.remove()
    # The first MBN layer's input of that second forward is x1's input under the new weights.
    direct = seen[0]
    assert len(seen) == 2
    mean_then, var_then = first.past[1]
    torch.testing.assert_close(mean_then, direct.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(var_then, direct.var(dim=(0, 2, 3), unbiased=False))


def test_mbn_at_evaluation_is_batch_norm_with_the_memorised_statistics() -> None:
    method, model = build("mbn", memory=2)
    model.train()
    method.training_step(model, Batch(torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))))
    method.prepare_eval(model)
    layer = mbn_layers(model)[0]
    inp = torch.randn(4, layer.num_features, 5, 5)
    expected = standardise(inp, layer.running_mean, layer.running_var)
    expected = expected * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(inp), expected)
    layer.train()  # Tent: the test batch's statistics, no memory
    bn = nn.BatchNorm2d(layer.num_features).train()
    bn.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(inp), bn(inp))
    assert not layer.past
