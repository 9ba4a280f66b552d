"""What makes each method different from vanilla, checked directly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metabn_bench.data import augmix as augmix_ops
from metabn_bench.methods import Batch
from metabn_bench.methods.augmix import jensen_shannon
from metabn_bench.methods.cutout import cutout
from metabn_bench.methods.mixup import mixed_cross_entropy
from metabn_bench.models.cnsn import (
    CNSNUnit,
    CrossNormConfig,
    SelfNorm,
    cnsn_units,
    cross_norm,
    instance_mean_std,
)
from metabn_bench.models.split_bn import SplitBatchNorm2d, split_layers
from tests.test_methods import make


def _distinct_images(n: int = 8, size: int = 16) -> torch.Tensor:
    """Image i is constant (i + 1) / (n + 2): every pixel tells which image it came from."""
    values = (torch.arange(n, dtype=torch.float32) + 1) / (n + 2)
    return values.view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()


# -- Cutout --------------------------------------------------------------------------------------

def test_cutout_cuts_one_clipped_square_per_image_filled_with_the_mean() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 3, 32, 32) * 0.4 + 0.55  # never equal to the 0.5 fill
    out = cutout(x, 16, torch.full((1, 3, 1, 1), 0.5))
    hole = (out == 0.5).all(dim=1)  # (N, H, W)
    assert torch.equal(out[~hole.unsqueeze(1).expand_as(out)], x[~hole.unsqueeze(1).expand_as(x)])
    areas = hole.sum(dim=(1, 2))
    assert int(areas.max()) == 256 and int(areas.min()) < 256  # full squares and clipped ones
    for h in hole:
        rows, cols = h.any(1).nonzero().squeeze(1), h.any(0).nonzero().squeeze(1)
        assert int(h.sum()) == len(rows) * len(cols)  # one axis-aligned rectangle
        assert len(rows) <= 16 and len(cols) <= 16
    assert len({tuple(h.flatten().tolist()) for h in hole}) > 32  # a hole per image


def test_cutout_method_fills_with_zero_after_normalisation() -> None:
    method, _ = make("cutout", size=8)
    x = torch.rand(4, 3, 16, 16) * 0.4 + 0.55
    out = method.normalize(method.batch_transform(Batch(x, torch.zeros(4, dtype=torch.long))).x)
    assert int((out == 0).all(dim=1).sum()) >= 4 * 16  # at least a clipped quarter-hole each


# -- Mixup and CutMix ----------------------------------------------------------------------------

def test_mixup_mixes_pairs_with_one_lambda_and_mixes_the_loss() -> None:
    method, model = make("mixup")
    x, y = _distinct_images(), torch.arange(8)
    torch.manual_seed(0)
    batch = method.batch_transform(Batch(x, y))
    lam, y_other = batch.extra["lam"], batch.extra["y_other"]
    partner = x[y_other]  # image i has label i
    torch.testing.assert_close(batch.x, lam * x + (1 - lam) * partner)
    assert not torch.equal(y_other, y)
    logits = model(method.normalize(batch.x))
    torch.testing.assert_close(mixed_cross_entropy(logits, y, y_other, lam),
                               lam * F.cross_entropy(logits, y)
                               + (1 - lam) * F.cross_entropy(logits, y_other))
    out = method.training_step(model, batch)
    assert out.logs["lam"] == lam


def test_cutmix_pastes_one_box_from_the_partner_and_sets_lambda_by_area() -> None:
    method, _ = make("cutmix", prob=1.0)
    x, y = _distinct_images(size=32), torch.arange(8)
    for seed in range(5):
        torch.manual_seed(seed)
        batch = method.batch_transform(Batch(x, y))
        moved = batch.extra["y_other"] != y  # images whose partner is another image
        pasted = (batch.x != x)[moved, 0]  # where such an image shows its partner
        box = pasted[0]
        assert all(torch.equal(p, box) for p in pasted)  # one box for the whole batch
        partner = x[batch.extra["y_other"]]
        torch.testing.assert_close(batch.x, torch.where(box, partner, x))
        assert batch.extra["lam"] == pytest.approx(1 - float(box.float().mean()))
    never, _ = make("cutmix", prob=0.0)
    assert never.batch_transform(Batch(x, y)).x is x


# -- AugMix --------------------------------------------------------------------------------------

def test_jensen_shannon_is_zero_for_identical_views_and_positive_otherwise() -> None:
    z = torch.randn(8, 10)
    assert float(jensen_shannon((z, z, z))) == pytest.approx(0, abs=1e-6)
    assert float(jensen_shannon((z, z + torch.randn(8, 10), z))) > 1e-3


def test_augmix_sends_three_views_in_one_batch_with_ce_on_the_clean_view_only() -> None:
    method, model = make("augmix", jsd_weight=0.0)
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    batch = method.batch_transform(Batch(x, y))
    v1, v2 = batch.extra["views"]
    assert not torch.equal(v1, x) and not torch.equal(v1, v2)
    out = method.training_step(model, batch)
    assert sizes == [12]
    with torch.no_grad():  # the clean third of the same 3-view train-mode batch
        logits = model(method.normalize(torch.cat([x, v1, v2])))
    torch.testing.assert_close(out.loss.detach(), F.cross_entropy(logits[:4], y), rtol=1e-4,
                               atol=1e-5)
    weighted, _ = make("augmix")
    full = weighted.training_step(model, batch)
    assert float(full.loss.detach()) == pytest.approx(out.logs["ce"] + 12 * full.logs["jsd"], rel=1e-4)


def test_augmix_method_never_uses_the_excluded_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    used: set[str] = set()
    for name, op in list(augmix_ops.POINT_OPS.items()):
        monkeypatch.setitem(augmix_ops.POINT_OPS, name,
                            lambda x, level, _n=name, _op=op: used.add(_n) or _op(x, level))
    method, _ = make("augmix")
    torch.manual_seed(0)
    for _ in range(3):
        method.batch_transform(Batch(torch.rand(32, 3, 16, 16), torch.zeros(32, dtype=torch.long)))
    assert used and not used & {"color", "contrast", "brightness", "sharpness"}


# -- SelfNorm and CrossNorm ----------------------------------------------------------------------

def test_selfnorm_gate_shape_and_it_acts_at_eval() -> None:
    sn = SelfNorm(6)
    assert sum(p.numel() for p in sn.gate_fc.parameters()) == 12  # a 2->1 map per channel
    sn.train()
    sn(torch.randn(8, 6, 5, 5))  # give its BN1d some statistics
    sn.eval()
    x = torch.randn(4, 6, 5, 5)
    gate = sn.gate(x)
    assert gate.shape == (4, 6) and bool(((gate > 0) & (gate < 1)).all())
    torch.testing.assert_close(sn(x), x * gate[..., None, None])
    scaled = x.clone()
    scaled[0] *= 3  # changes sample 0's statistics, hence only sample 0's gate
    g2 = sn.gate(scaled)
    assert not torch.allclose(g2[0], gate[0]) and torch.allclose(g2[1:], gate[1:])
    _, model = make("selfnorm")
    model.eval()
    units = cnsn_units(model)
    assert len(units) == 3 and all(u.selfnorm is not None and u.crossnorm is None for u in units)
    assert all(isinstance(b.unit_pre, CNSNUnit) for b in model.blocks)  # official: 'pre'


def test_crossnorm_swaps_instance_statistics_between_samples() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 4, 8, 8) * torch.arange(1, 7).view(6, 1, 1, 1) + torch.arange(6).view(6, 1, 1, 1)
    torch.manual_seed(1)
    perm = torch.randperm(6)
    torch.manual_seed(1)
    out = cross_norm(x, CrossNormConfig("neither"))
    assert not torch.equal(perm, torch.arange(6))
    mean, std = instance_mean_std(out)
    x_mean, x_std = instance_mean_std(x)
    torch.testing.assert_close(mean, x_mean[perm], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std, x_std[perm], atol=1e-4, rtol=1e-4)
    # ... while keeping each sample's normalised content.
    torch.testing.assert_close((out - mean) / std, (x - x_mean) / x_std, atol=1e-4, rtol=1e-4)


def test_crossnorm_content_crop_restyles_only_a_box() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16) + torch.arange(4).view(4, 1, 1, 1) * 3
    out = cross_norm(x, CrossNormConfig("content"))
    changed = (out != x).any(dim=1).any(dim=0)
    rows, cols = changed.any(1).nonzero().squeeze(1), changed.any(0).nonzero().squeeze(1)
    assert int(changed.sum()) == len(rows) * len(cols) >= 0.1 * 256  # one box, >= 10 % area


def test_crossnorm_acts_in_exactly_the_activated_training_forward() -> None:
    method, model = make("crossnorm", cn_prob=1.0, active_num=2)
    calls: list[int] = []
    for unit in cnsn_units(model):
        unit.register_forward_hook(
            lambda m, args, out: calls.append(int(not torch.equal(args[0], out))))
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    model.train()
    method.training_step(model, Batch(x, y))
    assert sum(calls) == 2 and len(calls) == 3  # 2 of the 3 WRN-10-1 blocks
    calls.clear()
    model(method.normalize(x))  # a forward without activation: no CrossNorm
    assert sum(calls) == 0
    for unit in cnsn_units(model):
        unit.active = True
    model.eval()
    model(method.normalize(x))  # never at test time
    assert sum(calls) == 0
    _, cnsn = make("cnsn")
    units = cnsn_units(cnsn)
    assert all(u.selfnorm is not None and u.crossnorm.crop == "both" for u in units)
    assert all(isinstance(b.unit_post, CNSNUnit) for b in cnsn.blocks)  # official: 'post'


# -- Split BN ------------------------------------------------------------------------------------

def test_split_bn_routes_the_two_halves_to_different_statistics() -> None:
    bn = SplitBatchNorm2d(3)
    x = torch.cat([torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4) + 5])
    bn.train()
    bn.split = 8
    bn(x)
    assert float(bn.main.running_mean.mean()) == pytest.approx(0.1 * float(x[:8].mean()), abs=0.02)
    assert float(bn.aux.running_mean.mean()) == pytest.approx(0.1 * float(x[8:].mean()), abs=0.02)


def test_split_bn_method_trains_both_and_evaluates_with_the_chosen_bns() -> None:
    method, model = make("splitbn")
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    batch = method.batch_transform(Batch(x, y))
    assert batch.extra["strong"].shape == x.shape and not torch.equal(batch.extra["strong"], x)
    model.train()
    out = method.training_step(model, batch)
    out.loss.backward()
    layers = split_layers(model)
    assert layers and all(m.split is None for m in layers)  # routing ends with the forward
    assert all(m.main.weight.grad is not None and m.aux.weight.grad is not None for m in layers)
    assert not torch.equal(layers[0].main.running_mean, layers[0].aux.running_mean)
    method.prepare_eval(model)
    with torch.no_grad():
        main = model(method.normalize(x))
    aux_method, _ = make("splitbn", eval_bn="aux")
    aux_method.prepare_eval(model)
    assert all(m.route == "aux" for m in layers)
    with torch.no_grad():
        aux = model(method.normalize(x))
    assert not torch.allclose(main, aux)


def test_units_are_absent_from_plain_models() -> None:
    _, model = make("vanilla")
    assert not cnsn_units(model) and not split_layers(model)
    assert all(isinstance(b.unit_pre, nn.Identity) for b in model.blocks)
