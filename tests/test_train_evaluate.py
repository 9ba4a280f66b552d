"""Training (checkpoints, resume, done marker), evaluation rows and test-time protocols."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metabn_bench.config import TrainConfig, config_hash, identity, replace
from metabn_bench.data.store import open_set
from metabn_bench.errors import UserError
from metabn_bench.evaluation.evaluate import cells_of, evaluate
from metabn_bench.evaluation.protocols import make_protocol
from metabn_bench.models import build_model
from metabn_bench.runs import load_config
from metabn_bench.training import loop as train_mod
from metabn_bench.training.loop import cosine_lambda, train
from tests.helpers import tiny_train_config


def test_a_finished_run_has_everything(trained_run: Path) -> None:
    for name in ("config.json", "env.json", "metrics.jsonl", "model.pt", "done"):
        assert (trained_run / name).exists(), name
    assert not (trained_run / "checkpoint.pt").exists()
    env = json.loads((trained_run / "env.json").read_text())
    assert env["versions"]["torch"] == torch.__version__
    assert env["data"]["source"].startswith("synthetic")
    assert load_config(trained_run).hparams == {}
    state = torch.load(trained_run / "model.pt", weights_only=True)
    assert any(k.endswith("running_mean") for k in state)


def test_finished_runs_are_skipped_and_other_configs_refused(trained_run: Path) -> None:
    assert train(tiny_train_config(), trained_run, progress=False).skipped
    with pytest.raises(UserError, match="holds a different config"):
        train(tiny_train_config(epochs=2), trained_run, progress=False)


def test_resume_after_interruption_gives_the_same_weights(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_train_config(epochs=3)
    train(cfg, tmp_path / "straight", progress=False)

    original = train_mod._epoch
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # dies during the second epoch
        return original(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed" / "done").exists()
    monkeypatch.setattr(train_mod, "_epoch", original)
    info = train(cfg, tmp_path / "resumed", progress=False)
    assert info.resumed_from == 1
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]


def test_cosine_schedule_ends_at_lr_min() -> None:
    f = cosine_lambda(100, 0.1, 1e-6)
    assert f(0) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.5, abs=1e-4)
    assert 0.1 * f(100) == pytest.approx(1e-6)


def test_warmup_rises_linearly_then_decays() -> None:
    f = cosine_lambda(100, 0.1, 0.0, warmup_steps=10)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0)  # the cosine starts at the peak
    assert f(55) == pytest.approx(0.5, abs=1e-6)  # halfway through the 90 decay steps
    assert f(100) == pytest.approx(0.0, abs=1e-12)


def test_added_key_at_its_old_value_keeps_the_run_name() -> None:
    base = TrainConfig()
    assert "warmup_epochs" not in identity(base)["optim"]
    warm = replace(base, optim=replace(base.optim, warmup_epochs=1.0))
    assert identity(warm)["optim"]["warmup_epochs"] == 1.0
    assert config_hash(warm) != config_hash(base)


def test_evaluate_writes_one_row_per_protocol_and_cell(trained_run: Path,
                                                       corrupted_set: Path) -> None:
    rows = evaluate(trained_run, corrupted_set, ("none", "bn"), progress=False)
    cset = open_set(corrupted_set)
    cells = cells_of(cset, extras=False)
    assert len(rows) == 2 * len(cells) == 2 * (1 + 5 * len(cset.corruptions))
    row = rows[0]
    for key in ("run_id", "method", "seed", "corruption", "severity", "n", "error", "protocol",
                "test_batch_size", "reset", "data_source", "set_id"):
        assert key in row
    assert row["corruption"] == "clean" and row["n"] == 40
    mtime = (trained_run / "eval.jsonl").stat().st_mtime_ns
    again = evaluate(trained_run, corrupted_set, ("none", "bn"), progress=False)
    assert again == rows and (trained_run / "eval.jsonl").stat().st_mtime_ns == mtime


def test_evaluate_refuses_unfinished_runs_and_unknown_protocols(tmp_path: Path,
                                                                corrupted_set: Path,
                                                                trained_run: Path) -> None:
    with pytest.raises(UserError, match="has not finished training"):
        evaluate(tmp_path, corrupted_set, progress=False)
    with pytest.raises(UserError, match="unknown test-time protocol 'tta'; valid: bn, none, tent"):
        evaluate(trained_run, corrupted_set, ("tta",), progress=False)


def _model_and_forward() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    model = build_model("wrn10_1", 10)
    with torch.no_grad():  # make running statistics differ from any test batch's
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    model.eval()
    return model, model


def test_bn_adaptation_uses_batch_statistics_and_resets() -> None:
    model, forward = _model_and_forward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(16, 3, 32, 32)
    protocol = make_protocol("bn", model, forward)
    adapted = protocol.predict(x)
    model.train()
    with torch.no_grad():
        reference = model(x)  # train-mode BN: normalise with this batch's statistics
    model.eval()
    torch.testing.assert_close(adapted, reference, rtol=1e-4, atol=1e-4)
    protocol.reset()
    for key, value in model.state_dict().items():
        if "num_batches_tracked" not in key:
            torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    prior = make_protocol("bn:prior=1000000", build_model("wrn10_1", 10).eval(), forward)
    assert prior.describe() == {"prior": 1e6}


def test_tent_updates_affine_only_predicts_before_update_and_resets() -> None:
    model, forward = _model_and_forward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    protocol = make_protocol("tent", model, forward)
    x = torch.rand(16, 3, 32, 32)
    first = protocol.predict(x)
    second = protocol.predict(x)
    assert not torch.allclose(first, second)  # the first step changed gamma/beta
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith(("weight", "bias", "num_batches_tracked")) for k in changed)
    assert not any("conv" in k for k in changed)
    protocol.reset()
    torch.testing.assert_close(protocol.predict(x), first)
