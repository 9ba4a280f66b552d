"""The `metabn` method: options, the three training modes, meta-test statistics, running
statistics from the meta-train pass only, shift proxies, resume and evaluation end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metabn_bench.analysis.ablation import write_ablation
from metabn_bench.analysis.diagnostics import diagnose
from metabn_bench.corruptions.ops import CORRUPTIONS
from metabn_bench.corruptions.registry import Corruption
from metabn_bench.data.store import open_set
from metabn_bench.errors import UserError
from metabn_bench.evaluation.evaluate import evaluate
from metabn_bench.methods import Batch, build_method
from metabn_bench.methods.metabn import MetaBN
from metabn_bench.methods.shift_proxy import make_proxy
from metabn_bench.models.metabn import auxiliary_parameters, meta_bn_layers
from metabn_bench.training.loop import train
from tests.helpers import assert_resume_is_exact, tiny_train_config


def _method(**hparams: object) -> MetaBN:
    cfg = tiny_train_config(method="metabn", hparams=hparams)
    return build_method(cfg, 10, torch.device("cpu"))  # type: ignore[return-value]


def _model_and_batch(method: MetaBN, seed: int = 0) -> tuple[torch.nn.Module, Batch]:
    torch.manual_seed(seed)
    model = method.build_model()
    with torch.no_grad():  # an auxiliary net that already corrects
        for p in auxiliary_parameters(model):
            p.normal_(0, 0.2)
    x = torch.rand(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))
    return model.train(), Batch(x, y, lr=0.05)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("aux_net", "lstm", "unknown hparams.aux_net 'lstm'; valid: se_mlp, per_channel, shared"),
    ("training_mode", "maml", "valid: episodic, joint, post_hoc"),
    ("placement", "last", "valid: all, first_stage, first_two_stages"),
    ("stats_source", "running", "valid: instance, batch"),
    ("proxy", "noise", "valid: augmix, validation_corruptions"),
    ("meta_test_gradient", "full", "valid: detached, straight_through"),
    ("replay_weights", "theta2", "valid: theta_prime, theta"),
    ("bound", -1.0, "must be >= 0"),
    ("backbone_run", "/x", "post_hoc only"),
    ("colour", 1, "unknown config key 'hparams.colour'"),
])
def test_bad_options_are_user_errors(key: str, value: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        _method(**{key: value})


def test_every_option_is_a_config_key_with_the_documented_defaults() -> None:
    hp = _method().resolved_hparams()
    assert hp["aux_net"] == "se_mlp" and hp["placement"] == "all"
    assert hp["stats_source"] == "instance" and hp["training_mode"] == "episodic"
    assert hp["proxy"] == "augmix" and hp["bound"] == 0.5
    assert hp["meta_train_weight"] == hp["meta_test_weight"] == 1.0
    assert hp["meta_test_gradient"] == "straight_through"
    assert hp["replay_weights"] == "theta_prime"


def _capture(model: torch.nn.Module) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per forward pass, the (mean, var) each layer normalised with."""
    passes: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    layers = meta_bn_layers(model)

    def hook(module: torch.nn.Module, args: object, out: object) -> None:
        if module is layers[0]:
            passes.append([])
        passes[-1].append(module.last_normalisation)

    for m in layers:
        m.register_forward_hook(hook)
    return passes


@pytest.mark.parametrize(("mode", "gradient"), [("episodic", "detached"), ("joint", "detached"),
                                              ("episodic", "straight_through")])
def test_meta_test_pass_uses_meta_train_statistics_and_running_stats_come_from_meta_train(
        mode: str, gradient: str) -> None:
    method = _method(training_mode=mode, meta_test_gradient=gradient, replay_weights="theta")
    model, batch = _model_and_batch(method)
    twin, _ = _model_and_batch(method)
    passes = _capture(model)
    train_passes = _capture(twin)
    torch.manual_seed(5)
    out = method.training_step(model, batch)
    twin(method.normalize(batch.x))  # one plain training-mode forward of the meta-train view
    assert len(passes) == 2  # meta-train, then meta-test
    for used_train, used_test, reference in zip(passes[0], passes[1], train_passes[0]):
        torch.testing.assert_close(used_test[0], used_train[0], rtol=0, atol=0)
        torch.testing.assert_close(used_test[1], used_train[1], rtol=0, atol=0)
        torch.testing.assert_close(used_train[0], reference[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(meta_bn_layers(model), meta_bn_layers(twin)):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-5, atol=1e-6)
        assert int(a.num_batches_tracked) == 1
    assert {"loss_meta_train", "loss_meta_test", "dgamma_abs", "dbeta_abs"} <= set(out.logs)
    assert out.logs["dgamma_abs"] > 0


@pytest.mark.parametrize("gradient", ["detached", "straight_through"])
def test_meta_test_statistics_are_recorded_under_the_inner_step_weights(gradient: str) -> None:
    method = _method(meta_test_gradient=gradient)
    model, batch = _model_and_batch(method)
    twin, _ = _model_and_batch(method)
    passes = _capture(model)
    torch.manual_seed(5)
    method.training_step(model, batch)
    assert len(passes) == 3  # meta-train at theta, its statistics at theta', meta-test
    # Reference: theta' = theta - lr * grad L_tr, then a plain training-mode forward of the
    # meta-train view under theta' (the twin, a copy of the model), float64.
    twin.double()
    x_train = method.normalize(batch.x).double()
    named = dict(twin.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(twin(x_train), batch.y), list(named.values()))
    fast = {n: (p - batch.lr * g).detach() for (n, p), g in zip(named.items(), grads)}
    prime = _capture(twin)
    for m in meta_bn_layers(twin):
        m.momentum = 0.0  # z is read against the running statistics the meta-train pass left
    functional_call(twin, fast, (x_train,))
    drift = 0.0
    for at_theta, used_test, reference in zip(passes[0], passes[2], prime[-1]):
        torch.testing.assert_close(used_test[0].double(), reference[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(used_test[1].double(), reference[1], rtol=1e-4, atol=1e-5)
        drift = max(drift, float((at_theta[0] - used_test[0]).abs().max()))
    assert drift > 1e-3  # the inner step moves the statistics: the check can tell
    for m in meta_bn_layers(model):
        assert int(m.num_batches_tracked) == 1  # the recording pass is not a training batch


def test_episodic_gradient_is_the_first_order_mldg_gradient() -> None:
    method = _method(meta_test_weight=0.7, meta_test_gradient="detached", replay_weights="theta")
    model, batch = _model_and_batch(method)
    reference, _ = _model_and_batch(method)
    torch.manual_seed(5)
    out = method.training_step(model, batch)
    model.zero_grad()
    out.loss.backward()
    # Reference: explicit theta' = theta - lr * g, then g + 0.7 * grad L_te(theta') at theta'.
    torch.manual_seed(5)
    x_test = method.normalize(method.proxy(batch.x))
    x_train = method.normalize(batch.x)
    loss_train = F.cross_entropy(reference(x_train), batch.y)
    named = dict(reference.named_parameters())
    grads_train = dict(zip(named, torch.autograd.grad(loss_train, list(named.values()))))
    fast = {n: (p - batch.lr * grads_train[n]).detach().requires_grad_(True)
            for n, p in named.items()}
    layers = meta_bn_layers(reference)
    for m in layers:
        m.replay = True
    loss_test = F.cross_entropy(functional_call(reference, fast, (x_test,)), batch.y)
    grads_test = dict(zip(fast, torch.autograd.grad(loss_test, list(fast.values()))))
    expected_loss = float(loss_train.detach()) + 0.7 * float(loss_test.detach())
    assert float(out.loss.detach()) == pytest.approx(expected_loss, rel=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads_train[name] + 0.7 * grads_test[name],
                                   rtol=1e-4, atol=1e-6, msg=name)
    assert out.logs["loss_meta_test"] == pytest.approx(float(loss_test.detach()), rel=1e-5)


def test_shared_hypernetwork_gets_its_inner_step_in_every_layer() -> None:
    method = _method(aux_net="shared")
    model, batch = _model_and_batch(method)
    before = {id(p) for p in model.parameters()}
    out = method.training_step(model, batch)
    out.loss.backward()
    # Every slot holds its original leaf parameter again (functional_call would leave the
    # shared hypernetwork's slots holding the inner-step tensors).
    after = list(model.named_parameters(remove_duplicate=False))
    assert sum(".hypernet." in n for n, _ in after) > 4
    assert all(p.is_leaf and id(p) in before for _, p in after)
    hyper = meta_bn_layers(model)[0].aux.hypernet
    assert hyper.fc2.weight.grad is not None and hyper.fc2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("aux_net", ["se_mlp", "per_channel", "shared"])
@pytest.mark.parametrize("mode", ["episodic", "joint"])
def test_a_training_step_moves_the_auxiliary_nets_from_zero(mode: str, aux_net: str) -> None:
    method = _method(training_mode=mode, aux_net=aux_net)
    torch.manual_seed(0)
    model = method.build_model().train()
    opt = torch.optim.SGD(method.parameter_groups(model), lr=0.1)
    batch = Batch(torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,)), lr=0.1)
    for _ in range(2):  # the first step moves the zero last layer, the second the rest
        out = method.training_step(model, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    out = method.training_step(model, batch)
    assert out.logs["dgamma_abs"] > 0 and out.logs["dbeta_abs"] > 0


def test_placement_first_stage_still_replays_statistics_in_every_layer() -> None:
    method = _method(placement="first_stage")
    model, batch = _model_and_batch(method)
    passes = _capture(model)
    method.training_step(model, batch)
    assert len(passes) == 3  # meta-train, its statistics under theta', meta-test
    for recorded, used_test in zip(passes[1], passes[2]):
        assert torch.equal(recorded[0], used_test[0])


def test_post_hoc_trains_only_the_auxiliary_nets_of_a_frozen_backbone(
        trained_run: Path, tmp_path: Path) -> None:
    cfg = tiny_train_config(method="metabn", hparams={"training_mode": "post_hoc",
                                                      "backbone_run": str(trained_run)})
    run = train(cfg, tmp_path / "post_hoc", progress=False).run_dir
    backbone = torch.load(trained_run / "model.pt", weights_only=True)
    trained = torch.load(run / "model.pt", weights_only=True)
    for key, value in backbone.items():
        torch.testing.assert_close(trained[key], value, rtol=0, atol=0, msg=key)
    aux_keys = [k for k in trained if ".aux." in k]
    assert aux_keys and any(trained[k].abs().sum() > 0 for k in aux_keys if "fc2" in k)


def test_post_hoc_refuses_a_backbone_that_does_not_fit(trained_run: Path) -> None:
    method = _method(training_mode="post_hoc", backbone_run=str(trained_run))
    cfg = tiny_train_config(method="metabn", arch="wrn16_2",
                            hparams={"training_mode": "post_hoc", "backbone_run": str(trained_run)})
    other = build_method(cfg, 10, torch.device("cpu"))
    with pytest.raises(UserError, match="post_hoc needs a vanilla wrn16_2 run"):
        other.prepare_training(other.build_model(), None)
    with pytest.raises(UserError, match="not a finished run"):
        method.hp = type(method.hp)(training_mode="post_hoc", backbone_run="/nonexistent")
        method.prepare_training(method.build_model(), None)


def test_post_hoc_without_a_backbone_trains_one_first(tmp_path: Path) -> None:
    cfg = tiny_train_config(method="metabn", hparams={"training_mode": "post_hoc"},
                            data={"train_size": 128})
    run = train(cfg, tmp_path / "self", progress=False).run_dir
    assert (run / "backbone" / "done").exists()
    assert json.loads((run / "backbone" / "config.json").read_text())["method"] == "vanilla"


def test_validation_corruption_proxy_is_refused_without_extras_and_uses_them_when_present(
        monkeypatch: pytest.MonkeyPatch) -> None:
    present = [n for n in ("speckle_noise", "gaussian_blur", "spatter", "saturate")
               if n in CORRUPTIONS]
    for name in present:
        monkeypatch.delitem(CORRUPTIONS._items, name)
    with pytest.raises(UserError, match="needs at least one of the extra corruptions .* "
                                        "implemented now: .*gaussian_noise"):
        _method(proxy="validation_corruptions")

    def brighten(x: torch.Tensor, params: object, rng: object) -> torch.Tensor:
        return (x + 0.25).clamp(0, 1) * 255

    monkeypatch.setitem(CORRUPTIONS._items, "saturate", Corruption("saturate", brighten, False))
    proxy = make_proxy("validation_corruptions")
    x = torch.rand(4, 3, 32, 32) * 0.5
    torch.testing.assert_close(proxy(x), torch.floor((x + 0.25) * 255) / 255)
    method = _method(proxy="validation_corruptions")
    model, batch = _model_and_batch(method)
    assert torch.isfinite(method.training_step(model, batch).loss)


def test_metabn_run_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_train_config(method="metabn", epochs=3, data={"train_size": 64})
    assert_resume_is_exact(cfg, tmp_path, monkeypatch)
    rows = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_meta_test" in r and "dgamma_abs" in r for r in rows)


def test_metabn_trains_and_evaluates_end_to_end(tmp_path: Path, corrupted_set: Path) -> None:
    cfg = tiny_train_config(method="metabn", data={"train_size": 64})
    run = train(cfg, tmp_path / "run-s0", progress=False).run_dir
    # (Tent and BN adaptation on Meta-BN layers are checked in test_metabn_layer.py.)
    rows = evaluate(run, corrupted_set, ("none", "bn"), batch_size=20, progress=False)
    assert {r["protocol"] for r in rows} == {"none", "bn"}
    assert all(r["method"] == "metabn" and 0 <= r["error"] <= 100 for r in rows)
    report = diagnose(run, corrupted_set, severity=5, n=40)
    layers = report["per_layer"]
    assert len(layers) == 7 and layers[0]["feature_size"] == 32  # WRN-10-1: 7 BN layers
    assert all(r["clean/dg"] > 0 for r in layers)
    assert set(report["errors"]) == {"clean", *open_set(corrupted_set).corruptions}
    diag_file = tmp_path / "diagnosis.json"
    diag_file.write_text(json.dumps(report))
    out = write_ablation([run], tmp_path / "ablation", "t", {"recipe": "tiny"}, [diag_file],
                         corrupted_set)
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["method"], r["protocol"]) for r in summary["rows"]} == {
        ("run", "none"), ("run", "bn")}
    assert summary["provenance"]["variants"]["run"]["options"] == {}
    for seed in (0, 1):  # two seeds of a post_hoc variant, each on its own backbone
        copy = tmp_path / f"ph-s{seed}"
        shutil.copytree(run, copy)
        cfg = json.loads((copy / "config.json").read_text())
        cfg["hparams"].update(training_mode="post_hoc", backbone_run=f"/runs/vanilla-s{seed}")
        cfg["seed"] = seed
        (copy / "config.json").write_text(json.dumps(cfg))
    seeds_out = write_ablation([tmp_path / "ph-s0", tmp_path / "ph-s1"], tmp_path / "ablation2",
                               "t", {}, [], corrupted_set)
    assert json.loads((seeds_out / "table.json").read_text())["provenance"]["variants"]["ph"][
        "options"] == {"training_mode": "post_hoc", "backbone_run": "(one per seed)"}
    assert "corrections on vs switched off" in (out / "table.md").read_text()
    for row in rows:  # with the corrections on, the diagnosis sees what evaluation saw
        if row["protocol"] == "none" and row["severity"] in (0, 5):
            assert report["errors"][row["corruption"]]["corrections_on"] == pytest.approx(
                row["error"])


def test_inner_step_gradients_come_from_the_scaled_loss_and_are_unscaled() -> None:
    # float16 backward through a tiny loss: unscaled, the gradient flushes to zero; scaled as
    # the outer loss is under a GradScaler, then unscaled in float32, it survives.
    p = torch.nn.Parameter(torch.ones(4))
    grads = {}
    for scale in (1.0, 2.0 ** 20):
        loss = (p.half() * 3).float().sum() * 1e-9
        batch = Batch(torch.zeros(1), torch.zeros(1), loss_scale=scale)
        grads[scale] = MetaBN._inner_gradients(loss, [p], batch)[0]
    assert torch.equal(grads[1.0], torch.zeros(4))
    torch.testing.assert_close(grads[2.0 ** 20], torch.full((4,), 3e-9), rtol=1e-3, atol=0)


def test_episodic_step_under_a_grad_scaler_is_the_step_without_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # float64 on the CPU: a GradScaler (power-of-two scale) multiplies and divides exactly, so
    # the scaled inner step and the unscaled outer gradients give the plain step's weights.
    from metabn_bench.training.step import train_step

    method = _method()
    method._proxy = lambda x: x.flip(3) * 0.6 + 0.3
    results = []
    seen: list[float] = []
    real = MetaBN._inner_gradients
    monkeypatch.setattr(MetaBN, "_inner_gradients", staticmethod(
        lambda loss, params, b: seen.append(b.loss_scale) or real(loss, params, b)))
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        model, batch = _model_and_batch(method)
        model.double()
        batch = Batch(batch.x.double(), batch.y, lr=0.05)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        train_step(method, model, batch, opt, scaler)
        results.append({k: v.clone() for k, v in model.state_dict().items()})
    assert seen == [1.0, 2.0 ** 12]  # the training step hands the method the scaler's scale
    for key in results[0]:
        torch.testing.assert_close(results[1][key], results[0][key], rtol=1e-12, atol=1e-12,
                                   msg=key)
