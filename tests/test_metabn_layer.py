"""MetaBatchNorm2d: exactly BatchNorm2d at initialisation, bounded corrections, meta-test
statistics replay, placement, every architecture and the test-time protocols."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metabn_bench.evaluation.metabn_eval import pin_source_statistics
from metabn_bench.evaluation.protocols import make_protocol
from metabn_bench.models import ARCHS, build_model
from metabn_bench.models.aux_nets import AUX_NETS
from metabn_bench.models.metabn import (
    MetaBatchNorm2d,
    auxiliary_parameters,
    corrected_layers,
    feature_sizes,
    meta_bn_layers,
    meta_test_statistics,
    restrict_placement,
)
from metabn_bench.models.norms import make_norm

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _pair(aux_net: str, stats_source: str, momentum: float | None = 0.1,
          channels: int = 6) -> tuple[MetaBatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(0)
    meta = make_norm("metabn", aux_net=aux_net, stats_source=stats_source,
                     momentum=momentum)(channels)
    meta.reset_norm_parameters()
    plain = nn.BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():  # non-trivial affine parameters, the same in both
        meta.weight.uniform_(0.5, 1.5)
        meta.bias.uniform_(-0.5, 0.5)
    plain.load_state_dict({k: v for k, v in meta.state_dict().items() if not k.startswith("aux.")})
    return meta, plain


@pytest.mark.parametrize("aux_net", AUX_NETS)
@pytest.mark.parametrize("stats_source", ["instance", "batch"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_fresh_layer_is_exactly_batchnorm(aux_net: str, stats_source: str,
                                          momentum: float | None) -> None:
    meta, plain = _pair(aux_net, stats_source, momentum)
    for step in range(3):  # train mode: outputs, input/affine gradients and running statistics
        x = (torch.randn(5, 6, 7, 7) * (1 + step) + step).requires_grad_(True)
        x2 = x.detach().clone().requires_grad_(True)
        if step == 2:
            x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        out_meta, out_plain = meta(x), plain(x2)
        torch.testing.assert_close(out_meta, out_plain, **TOL)
        weights = torch.randn_like(out_plain)
        (out_meta * weights).sum().backward()
        (out_plain * weights).sum().backward()
        torch.testing.assert_close(x.grad, x2.grad, **TOL)
        torch.testing.assert_close(meta.weight.grad, plain.weight.grad, **TOL)
        torch.testing.assert_close(meta.bias.grad, plain.bias.grad, **TOL)
        torch.testing.assert_close(meta.running_mean, plain.running_mean, **TOL)
        torch.testing.assert_close(meta.running_var, plain.running_var, **TOL)
        assert int(meta.num_batches_tracked) == int(plain.num_batches_tracked) == step + 1
    meta.eval()
    plain.eval()
    x = torch.randn(3, 6, 5, 5) * 2 + 1
    torch.testing.assert_close(meta(x), plain(x), **TOL)
    torch.testing.assert_close(meta(x[:1]), plain(x[:1]), **TOL)  # batch size 1 works


def _with_random_aux(layer: MetaBatchNorm2d, scale: float = 3.0) -> MetaBatchNorm2d:
    with torch.no_grad():
        for p in layer.aux.parameters():
            p.normal_(0, scale)
    return layer


@pytest.mark.parametrize("aux_net", AUX_NETS)
def test_corrections_are_bounded_per_sample_and_change_the_output(aux_net: str) -> None:
    meta, plain = _pair(aux_net, "instance")
    _with_random_aux(meta, 1.0)
    meta.eval()
    plain.eval()
    x = torch.randn(8, 6, 5, 5) * torch.linspace(0.2, 4, 8).view(8, 1, 1, 1)
    dg, db = meta.corrections(x)
    assert dg.shape == db.shape == (8, 6)
    assert dg.abs().max() <= meta.bound and db.abs().max() <= meta.bound  # tanh saturates
    assert dg.abs().max() > 0.05  # the random net really corrects
    assert not torch.allclose(dg[0], dg[-1])  # ... differently per sample
    gamma = meta.weight * (1 + dg)
    beta = meta.bias + db
    x_hat = (x - meta.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        meta.running_var.view(1, -1, 1, 1) + meta.eps)
    expected = x_hat * gamma[:, :, None, None] + beta[:, :, None, None]
    torch.testing.assert_close(meta(x), expected, **TOL)
    assert not torch.allclose(meta(x), plain(x), atol=1e-3)


def test_relative_statistics_follow_the_definition() -> None:
    layer = make_norm("metabn")(4)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
        layer.running_var.copy_(torch.tensor([1.0, 4.0, 0.25, 9.0]))
    x = torch.randn(3, 4, 6, 6) * 2 + 0.5
    z = layer.relative_statistics(x)
    mu = x.mean(dim=(2, 3))
    sigma = torch.sqrt(x.var(dim=(2, 3), unbiased=False) + layer.eps)
    ref = torch.sqrt(layer.running_var + layer.eps)
    torch.testing.assert_close(z[:, :4], (mu - layer.running_mean) / ref, **TOL)
    torch.testing.assert_close(z[:, 4:], torch.log(sigma) - torch.log(ref), **TOL)
    layer.stats_source = "batch"
    zb = layer.relative_statistics(x)
    assert torch.equal(zb[0], zb[2])  # the batch's statistics, the same for every sample


@pytest.mark.parametrize("channels_last", [False, True])
def test_cache_sized_chunks_give_the_moments_of_the_whole_batch_bit_for_bit(
        channels_last: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from metabn_bench.models import metabn_moments

    x = torch.randn(11, 5, 7, 7) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    whole = metabn_moments.instance_moments(x, keep_grad=True)
    monkeypatch.setattr(metabn_moments, "_CHUNK_BYTES", 3 * 5 * 7 * 7 * 4)  # chunks of 3 samples
    chunked = metabn_moments.instance_moments(x)
    for a, b in zip(whole, chunked):
        assert torch.equal(a.detach(), b)
    torch.testing.assert_close(chunked[1], x.var(dim=(2, 3), unbiased=False), **TOL)


def test_meta_test_pass_normalises_with_the_detached_meta_train_statistics() -> None:
    meta, _ = _pair("se_mlp", "instance")
    _with_random_aux(meta, 0.5)
    model = nn.Sequential(meta)
    model.train()
    x_train = (torch.randn(6, 6, 5, 5) + 1).requires_grad_(True)
    meta(x_train)
    running = (meta.running_mean.clone(), meta.running_var.clone(), meta.num_batches_tracked.clone())
    train_mean = x_train.detach().mean(dim=(0, 2, 3))
    train_var = x_train.detach().var(dim=(0, 2, 3), unbiased=False)
    x_test = torch.randn(6, 6, 5, 5) * 3 - 2  # a strongly shifted batch
    with meta_test_statistics(model):
        out = meta(x_test)
    mean, var = meta.last_normalisation
    torch.testing.assert_close(mean, train_mean, **TOL)
    torch.testing.assert_close(var, train_var, **TOL)
    dg, db = meta.corrections(x_test)
    x_hat = (x_test - train_mean.view(1, -1, 1, 1)) / torch.sqrt(train_var.view(1, -1, 1, 1)
                                                                  + meta.eps)
    expected = x_hat * (meta.weight * (1 + dg))[:, :, None, None] + (meta.bias + db)[:, :, None, None]
    torch.testing.assert_close(out, expected, **TOL)
    # The running statistics come from the meta-train pass only ...
    assert torch.equal(meta.running_mean, running[0]) and torch.equal(meta.running_var, running[1])
    assert torch.equal(meta.num_batches_tracked, running[2])
    # ... and the meta-test loss does not reach the meta-train batch through its statistics.
    assert not out.requires_grad or torch.autograd.grad(out.sum(), x_train, allow_unused=True)[0] is None
    assert not meta.replay
    # Without the context the same batch is normalised with its own statistics.
    meta(x_test)
    torch.testing.assert_close(meta.last_normalisation[0], x_test.mean(dim=(0, 2, 3)), **TOL)


def test_meta_test_pass_needs_a_meta_train_pass_first() -> None:
    layer = make_norm("metabn")(3)
    with meta_test_statistics(layer), pytest.raises(RuntimeError, match="meta-train"):
        layer(torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize(("placement", "sizes"), [("first_stage", {32}),
                                                  ("first_two_stages", {32, 16}),
                                                  ("all", {32, 16, 8})])
def test_placement_keeps_aux_nets_on_the_largest_feature_maps(placement: str,
                                                              sizes: set[int]) -> None:
    model = build_model("wrn16_2", 10, make_norm("metabn"))
    restrict_placement(model, placement)
    layer_sizes = dict(zip(map(id, meta_bn_layers(model)), feature_sizes(model)))
    kept = {layer_sizes[id(m)] for m in corrected_layers(model)}
    assert kept == sizes
    assert all(m.aux is None for m in meta_bn_layers(model) if layer_sizes[id(m)] not in sizes)


def test_shared_hypernetwork_is_one_set_of_weights() -> None:
    model = build_model("wrn10_1", 10, make_norm("metabn", aux_net="shared"))
    layers = corrected_layers(model)
    assert len({id(m.aux.hypernet) for m in layers}) == 1
    params = auxiliary_parameters(model)
    hyper = list(layers[0].aux.hypernet.parameters())
    assert len(params) == len(hyper) + len(layers)  # the shared net once, an embedding per layer
    state = model.state_dict()
    copy_model = build_model("wrn10_1", 10, make_norm("metabn", aux_net="shared"))
    copy_model.load_state_dict(state)
    torch.testing.assert_close(copy_model.state_dict()[next(iter(state))], state[next(iter(state))])


@pytest.mark.parametrize("arch", ARCHS.names())
def test_every_architecture_equals_its_batchnorm_twin_at_initialisation(arch: str) -> None:
    torch.manual_seed(1)
    meta = build_model(arch, 10, make_norm("metabn"))
    plain = build_model(arch, 10)
    state = {k: v for k, v in meta.state_dict().items() if ".aux." not in k}
    plain.load_state_dict(state)
    x = torch.rand(2, 3, 16, 16)  # small: the ResNets have 11M parameters
    torch.testing.assert_close(meta(x), plain(x), rtol=1e-4, atol=1e-4)  # train mode
    for a, b in zip(meta_bn_layers(meta), [m for m in plain.modules()
                                            if isinstance(m, nn.BatchNorm2d)]):
        torch.testing.assert_close(a.running_var, b.running_var, **TOL)
    meta.eval()
    plain.eval()
    torch.testing.assert_close(meta(x), plain(x), rtol=1e-4, atol=1e-4)


def _trained_like_metabn_model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("wrn10_1", 10, make_norm("metabn"))
    with torch.no_grad():
        for m in meta_bn_layers(model):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            _with_random_aux(m, 0.3)
    return model.eval()


def test_bn_adaptation_protocol_works_through_meta_bn() -> None:
    model = _trained_like_metabn_model()
    reference_model = copy.deepcopy(model)
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        unadapted = model(x)
    protocol = make_protocol("bn", model, model)
    adapted = protocol.predict(x)
    # Equivalent: every layer normalised with this batch's statistics and its shift z measured
    # against the source statistics; build it by pinning them, then setting each layer's
    # running statistics to the batch's.
    pin_source_statistics(reference_model)
    for m in meta_bn_layers(reference_model):
        m.register_forward_pre_hook(_set_running_to_batch)
    with torch.no_grad():
        torch.testing.assert_close(adapted, reference_model(x), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(adapted, unadapted, atol=1e-3)


def _set_running_to_batch(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    x = args[0]
    module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))


def test_tent_adapts_meta_bn_affine_only_and_resets() -> None:
    model = _trained_like_metabn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    protocol = make_protocol("tent", model, model)
    x = torch.rand(8, 3, 32, 32)
    first = protocol.predict(x)
    second = protocol.predict(x)
    assert not torch.allclose(first, second)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith(("bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias",
                                       "bn.weight", "bn.bias", "num_batches_tracked"))
                           for k in changed), changed
    assert not any(".aux." in k or "running" in k for k in changed)
    protocol.reset()
    torch.testing.assert_close(protocol.predict(x), first)


def test_straight_through_meta_test_pass_has_the_values_of_the_detached_one() -> None:
    meta, _ = _pair("se_mlp", "instance")
    _with_random_aux(meta, 0.5)
    x_train = (torch.randn(6, 6, 5, 5) + 1).requires_grad_(True)
    meta(x_train)
    x_test = (torch.randn(6, 6, 5, 5) * 3 - 2).requires_grad_(True)
    running = meta.running_mean.clone()
    with meta_test_statistics(meta):
        detached = meta(x_test)
    with meta_test_statistics(meta, "straight_through"):
        straight = meta(x_test)
    torch.testing.assert_close(straight, detached, **TOL)
    assert torch.equal(meta.running_mean, running)
    weights = torch.randn_like(straight)
    grad_x_train, grad_x_test = torch.autograd.grad((straight * weights).sum(),
                                                    [x_train, x_test], allow_unused=True)
    assert grad_x_train is None  # nothing flows into the meta-train pass
    # Reference backward: BatchNorm through the meta-test batch's own statistics, scaled by
    # the meta-train ones: d/dx of (x - m_own) / sqrt(v_train + eps) * g + (m_own - m_train) ...
    rec_mean, rec_var = meta.recorded
    x_ref = x_test.detach().clone().requires_grad_(True)
    own_mean = x_ref.mean(dim=(0, 2, 3))
    own_var = x_ref.var(dim=(0, 2, 3), unbiased=False)
    mean = rec_mean + own_mean - own_mean.detach()
    var = rec_var + own_var - own_var.detach()
    dg, db = meta.corrections(x_ref.detach())
    out = ((x_ref - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + meta.eps)
           * (meta.weight * (1 + dg))[:, :, None, None] + (meta.bias + db)[:, :, None, None])
    (ref_grad,) = torch.autograd.grad((out * weights).sum(), [x_ref])
    torch.testing.assert_close(grad_x_test, ref_grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="straight_through"), meta_test_statistics(meta, "other"):
        pass
