"""The `augmix_metabn` method: AugMix's loss when the Meta-BN parts are switched off, the JSD
term against a direct computation, which statistics each pass normalises with, every
architecture, options, and train + evaluate through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from metabn_bench.analysis.ablation_runs import load_runs, options
from metabn_bench.analysis.diagnostics import diagnose
from metabn_bench.cli import app
from metabn_bench.errors import UserError
from metabn_bench.methods import METHODS, Batch, Method, build_method
from metabn_bench.models import ARCHS
from metabn_bench.models.metabn import auxiliary_parameters, meta_bn_layers
from tests.helpers import tiny_train_config


def _method(name: str = "augmix_metabn", arch: str = "wrn10_1", **hparams: object) -> Method:
    return build_method(tiny_train_config(method=name, arch=arch, hparams=hparams), 10,
                        torch.device("cpu"))


def _batch_with_views(method: Method, n: int = 8, size: int = 16) -> Batch:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(1)
    return method.batch_transform(Batch(x, y, lr=0.05))


def _gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["episodic", "joint"])
def test_without_corrections_and_meta_test_term_the_step_is_augmix(mode: str) -> None:
    """bound=0 (corrections zero) and w_te=0: the loss, its gradient and the running
    statistics are AugMix's on the same views (the Meta-BN layers then compute BatchNorm)."""
    method = _method(bound=0.0, meta_test_weight=0.0, training_mode=mode)
    augmix = _method("augmix")
    torch.manual_seed(0)
    model = method.build_model().train()
    plain = augmix.build_model().train()
    plain.load_state_dict(model.state_dict(), strict=False)
    batch = _batch_with_views(method)
    out = method.training_step(model, batch)
    ref = augmix.training_step(plain, batch)
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(out.logits, ref.logits)
    assert out.logs["ce"] == pytest.approx(ref.logs["ce"])
    assert out.logs["jsd"] == pytest.approx(ref.logs["jsd"])
    ours, theirs = _gradients(model, out.loss), _gradients(plain, ref.loss)
    for name, grad in theirs.items():
        torch.testing.assert_close(ours[name], grad, msg=name)
    ours_state = model.state_dict()
    for name, value in plain.state_dict().items():
        if "running" in name:  # running statistics from the clean + views batch, as AugMix's
            torch.testing.assert_close(ours_state[name], value, msg=name)


def test_the_jsd_term_is_the_mean_kl_to_the_mixture() -> None:
    method = _method()
    torch.manual_seed(0)
    model = method.build_model().train()
    batch = _batch_with_views(method)
    out = method.meta_train_loss(model, batch)
    n = batch.x.shape[0]
    with torch.no_grad():  # the same forward pass again: the same logits in train mode
        x = torch.cat([batch.x, *batch.extra["views"]])
        logits = model(method.normalize(x))
    p = logits.double().softmax(1).view(3, n, 10)
    mixture = p.mean(0).clamp(1e-7, 1)
    direct = (p * (p.log() - mixture.log())).sum(2).mean(1).mean(0)
    # rel 1e-4: the JSD (~5e-4) is a difference of terms ~100x larger, so float32 rounding
    # in another reduction order (thread count, kernel path) moves it by ~1e-5 relative
    assert out.logs["jsd"] == pytest.approx(float(direct), rel=1e-4)
    ce = F.cross_entropy(logits[:n], batch.y)
    assert float(out.loss.detach()) == pytest.approx(float(ce + 12 * direct), rel=1e-5)


def test_the_meta_test_views_are_normalised_with_the_clean_views_statistics() -> None:
    """Three passes per joint step: clean + views (batch statistics, running statistics), the
    clean view alone (recorded, running statistics untouched), both views normalised with
    the clean view's statistics; the meta-test loss is the views' cross-entropy."""
    method = _method(training_mode="joint")
    torch.manual_seed(0)
    model = method.build_model().train()
    with torch.no_grad():
        for p in auxiliary_parameters(model):
            p.normal_(0, 0.2)
    first = meta_bn_layers(model)[0]
    inputs: list[torch.Tensor] = []
    used: list[tuple[torch.Tensor, torch.Tensor]] = []
    first.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().clone()))
    first.register_forward_hook(lambda m, a, o: used.append(m.last_normalisation))
    before = first.running_mean.clone()
    batch = _batch_with_views(method)
    n = batch.x.shape[0]
    out = method.training_step(model, batch)
    assert [t.shape[0] for t in inputs] == [3 * n, n, 2 * n]
    var, mean = torch.var_mean(inputs[1], dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(used[2][0], mean)
    torch.testing.assert_close(used[2][1], var, rtol=1e-4, atol=1e-5)
    mixed_mean = inputs[0].mean(dim=(0, 2, 3))
    torch.testing.assert_close(first.running_mean, 0.9 * before + 0.1 * mixed_mean)
    assert {"ce", "jsd", "loss_meta_train", "loss_meta_test", "dgamma_abs"} <= set(out.logs)
    assert torch.isfinite(out.loss) and out.logits.shape == (n, 10)


def test_with_meta_test_stats_own_the_views_are_normalised_with_their_own_statistics() -> None:
    method = _method(training_mode="joint", meta_test_stats="own")
    torch.manual_seed(0)
    model = method.build_model().train()
    first = meta_bn_layers(model)[0]
    inputs: list[torch.Tensor] = []
    used: list[tuple[torch.Tensor, torch.Tensor]] = []
    first.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().clone()))
    first.register_forward_hook(lambda m, a, o: used.append(m.last_normalisation))
    batch = _batch_with_views(method)
    method.training_step(model, batch)
    n = batch.x.shape[0]
    assert [t.shape[0] for t in inputs] == [3 * n, 2 * n]  # no recording pass
    var, mean = torch.var_mean(inputs[1], dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(used[1][0], mean)
    torch.testing.assert_close(used[1][1], var, rtol=1e-4, atol=1e-5)


# The model is Meta-BN's (test_metabn_layer.py builds it for every architecture); here one
# step on the two small families, WRN and ResNet-9 (the 11M-parameter ResNets take ~15 s),
# and every training mode.
@pytest.mark.parametrize(("arch", "mode"), [("resnet9_16", "episodic"), ("wrn10_1", "joint"),
                                            ("wrn10_1", "post_hoc")])
def test_a_step_in_every_mode_trains_the_auxiliary_nets(arch: str, mode: str) -> None:
    assert arch in ARCHS
    method = _method(arch=arch, training_mode=mode)
    torch.manual_seed(0)
    model = method.build_model().train()
    batch = _batch_with_views(method, n=4)
    loss = method.training_step(model, batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in auxiliary_parameters(model))


def test_options_are_augmix_views_and_metabn_defaults() -> None:
    hp = _method().resolved_hparams()
    augmix = METHODS.get("augmix").default_hparams()
    metabn = METHODS.get("metabn").default_hparams()
    for key in ("severity", "width", "depth", "alpha", "all_ops", "jsd_weight"):
        assert hp[key] == augmix[key]
    assert {k: v for k, v in metabn.items() if k not in ("proxy", "proxy_severity")} == \
        {k: hp[k] for k in metabn if k not in ("proxy", "proxy_severity")}
    assert "proxy" not in hp and "jsd" not in hp
    for bad in ({"jsd_weight": -1.0}, {"depth": 9}, {"bound": -1.0}, {"proxy": "augmix"}):
        with pytest.raises(UserError, match="hparams"):
            _method(**bad)


def test_trains_and_evaluates_through_the_cli(tmp_path: Path, small_set: Path) -> None:
    """Train and evaluate with the command line (bn and tent on it: test_methods.py)."""
    runner = CliRunner()
    run = tmp_path / "amx-s0"  # named as the ablation table expects: <variant>-s<seed>
    common = ["--device", "cpu", "--no-progress"]
    for args in (["train", "--method", "augmix_metabn", "--dataset", "synthetic", "--arch",
                  "wrn10_1", "--epochs", "1", "--set", "data.train_size=32", "--set",
                  "optim.batch_size=16", "--out", str(run)],
                 ["evaluate", str(run), "--corrupted", str(small_set), "--adapt",
                  "none,tent_aux", "--batch-size", "6"]):
        result = runner.invoke(app, args + common)
        assert result.exit_code == 0, (result.output, result.exception)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("jsd" in r and "loss_meta_test" in r for r in metrics)
    rows = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 5 and {r["protocol"] for r in rows} == {"none", "tent_aux"}
    assert all(r["method"] == "augmix_metabn" and 0 <= r["error"] <= 100 for r in rows)
    assert all(r["metabn"]["normalisation"] == "source" for r in rows)
    assert {r["transductive"] for r in rows if r["protocol"] == "tent_aux"} == {True}
    # Meta-BN's analyses take it as they take metabn.
    assert diagnose(run, small_set, severity=5, n=6)["per_layer"]
    (loaded,) = load_runs([run])
    assert (loaded.variant, options(loaded.config)) == ("amx", {})
