"""Meta-BN's training controls: the meta-test pass normalised with its own statistics
(`meta_test_stats=own`; with `bound=0` and `joint`, the same loss as a plain-BN network) and the
clean proxy (Meta-BN layers trained on clean data only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metabn_bench.errors import UserError
from metabn_bench.methods import Batch, build_method
from metabn_bench.methods.metabn import MetaBN
from metabn_bench.methods.shift_proxy import make_proxy
from metabn_bench.models.metabn import meta_bn_layers
from tests.helpers import tiny_train_config


def _method(**hparams: object) -> MetaBN:
    method = build_method(tiny_train_config(method="metabn", hparams=hparams), 10,
                          torch.device("cpu"))
    assert isinstance(method, MetaBN)
    method._proxy = lambda x: x.flip(3) * 0.6 + 0.3  # a deterministic shift of the batch
    return method


def _batch() -> Batch:
    torch.manual_seed(1)
    return Batch(torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,)), lr=0.05)


def test_bad_meta_test_stats_are_user_errors() -> None:
    assert _method().resolved_hparams()["meta_test_stats"] == "meta_train"  # the default
    with pytest.raises(UserError, match="unknown hparams.meta_test_stats 'test'; valid: meta_train, own"):
        _method(meta_test_stats="test")
    with pytest.raises(UserError, match="meta_test_stats=own is for training_mode episodic or joint"):
        _method(meta_test_stats="own", training_mode="post_hoc")


@pytest.mark.parametrize("own", [True, False])
def test_bound_zero_joint_own_statistics_is_the_plain_bn_loss(own: bool) -> None:
    hparams = {"bound": 0.0, "training_mode": "joint"} | ({"meta_test_stats": "own"} if own else {})
    method = _method(**hparams)
    torch.manual_seed(0)
    model = method.build_model().train()
    plain = build_method(tiny_train_config(), 10, torch.device("cpu")).build_model().train()
    missing, _ = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing  # the plain-BN network has every weight and statistic of Meta-BN's
    batch = _batch()
    out = method.training_step(model, batch)
    x_train, x_test = method.normalize(batch.x), method.normalize(method.proxy(batch.x))
    ce_train = F.cross_entropy(plain(x_train), batch.y)  # updates plain's running statistics
    saved = [(b.running_mean.clone(), b.running_var.clone())
             for b in plain.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    ce_test = F.cross_entropy(plain(x_test), batch.y)  # its own batch's statistics
    assert out.logs["loss_meta_train"] == pytest.approx(float(ce_train.detach()), rel=1e-5)
    if not own:  # bound=0 alone normalises the proxy with the clean batch's statistics
        assert abs(out.logs["loss_meta_test"] - float(ce_test.detach())) > 1e-3
        return
    assert out.logs["loss_meta_test"] == pytest.approx(float(ce_test.detach()), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float((ce_train + ce_test).detach()), rel=1e-5)
    # Running statistics come from the clean view only (the plain net's before its proxy pass).
    for layer, (mean, var) in zip(meta_bn_layers(model), saved):
        torch.testing.assert_close(layer.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.running_var, var, rtol=1e-5, atol=1e-6)
        assert int(layer.num_batches_tracked) == 1


@pytest.mark.parametrize("mode", ["episodic", "joint"])
def test_own_statistics_normalise_the_meta_test_pass_with_its_batch(mode: str) -> None:
    method = _method(meta_test_stats="own", training_mode=mode)
    torch.manual_seed(0)
    model = method.build_model().train()
    passes: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    layers = meta_bn_layers(model)

    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...], _out: object) -> None:
        if module is layers[0]:
            passes.append([])
        x = args[0].detach()
        passes[-1].append((module.last_normalisation[0], x.mean((0, 2, 3))))

    for m in layers:
        m.register_forward_hook(hook)
    method.training_step(model, _batch())
    assert len(passes) == 2  # meta-train, meta-test: no replay pass is needed
    for used, batch_mean in passes[1]:
        torch.testing.assert_close(used, batch_mean, rtol=1e-4, atol=1e-5)


def test_clean_proxy_is_the_meta_train_view_itself() -> None:
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(make_proxy("clean")(x), x)
    method = build_method(tiny_train_config(method="metabn", hparams={"proxy": "clean"}), 10,
                          torch.device("cpu"))
    assert isinstance(method, MetaBN) and torch.equal(method.proxy(x), x)
