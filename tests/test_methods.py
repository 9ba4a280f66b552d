"""Every registered method: build, train a few steps, evaluate under each protocol, reset."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metabn_bench.config import preset_dict, preset_names
from metabn_bench.data.augment import crop_flip
from metabn_bench.errors import UserError
from metabn_bench.evaluation.protocols import PROTOCOLS, NotApplicableError, bn_layers, make_protocol
from metabn_bench.methods import METHODS, Batch, Method, build_method
from metabn_bench.models.metabn import corrected_layers
from metabn_bench.training.step import train_step
from tests.helpers import assert_resume_is_exact, tiny_train_config


def make(name: str, **hparams: object) -> tuple[Method, nn.Module]:
    cfg = tiny_train_config(method=name, hparams=hparams)
    torch.manual_seed(0)
    method = build_method(cfg, 10, torch.device("cpu"))
    return method, method.build_model()


def train_steps(method: Method, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                steps: int = 3) -> list[float]:
    """The training loop's inner step (crop/flip, batch transform, loss, SGD), `steps` times."""
    opt = torch.optim.SGD(method.parameter_groups(model), lr=0.05, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for _ in range(steps):
        out = train_step(method, model, Batch(crop_flip(x, 2, True, gen), y), opt)
        losses.append(float(out.loss.detach()))
        assert out.logits is None or out.logits.shape == (x.shape[0], 10)
    return losses


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_evaluates_and_resets(name: str, data) -> None:
    x, y = data
    method, model = make(name)
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(1)
    losses = train_steps(method, model, x, y)
    assert all(torch.isfinite(torch.tensor(losses)))
    trained = model.state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in before if k.endswith("weight"))
    for spec in PROTOCOLS.names():
        copy_ = copy.deepcopy(model)
        method.prepare_eval(copy_)
        assert not copy_.training

        def forward(images: torch.Tensor, m: nn.Module = copy_) -> torch.Tensor:
            return m(method.normalize(images))

        # gn: nothing for bn / tent to adapt; tent_aux needs Meta-BN's auxiliary nets
        if (spec != "none" and not bn_layers(copy_)) or (
                spec == "tent_aux" and not corrected_layers(copy_)):
            with pytest.raises(NotApplicableError, match=f"protocol '{spec}' is not applicable"):
                make_protocol(spec, copy_, forward)
            continue
        protocol = make_protocol(spec, copy_, forward)
        method.reset()
        protocol.reset()
        first = protocol.predict(x)
        assert first.shape == (16, 10) and torch.isfinite(first).all()
        protocol.predict(x)
        method.reset()
        protocol.reset()
        torch.testing.assert_close(protocol.predict(x), first)  # the reset is complete


@pytest.mark.parametrize("name", METHODS.names())
def test_hparams_are_validated_with_the_valid_keys(name: str) -> None:
    with pytest.raises(UserError, match="unknown config key 'hparams.no_such_option'"):
        make(name, no_such_option=1)
    defaults = METHODS.get(name).default_hparams()
    assert make(name)[0].resolved_hparams() == defaults


# Methods registered but in no preset yet.
NOT_IN_PRESETS_YET: set[str] = set()


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_lists_every_method(preset: str) -> None:
    listed = list(preset_dict(preset)["methods"])
    expected = [name for name in METHODS.names() if name not in NOT_IN_PRESETS_YET]
    assert sorted(listed) == sorted(expected) and len(set(listed)) == len(listed)
    # Registry order (the tables' order), except where a preset schedules a slow method early.
    assert listed[0] == "vanilla"


@pytest.mark.parametrize(("name", "hparams"), [
    ("cutout", {"size": 0}), ("mixup", {"alpha": 0}), ("cutmix", {"prob": 2}),
    ("augmix", {"depth": 7}), ("selfnorm", {"position": "middle"}), ("crossnorm", {"crop": "all"}),
    ("cnsn", {"cn_prob": -1}), ("splitbn", {"eval_bn": "both"}),
    ("cbn", {"window": 0}), ("cbn", {"burn_in": 1.5}), ("mbn", {"weighting": "exponential"}),
    ("mbn", {"memory": 0}), ("bn_embeddings", {"domains": "pacs"}), ("bn_embeddings", {"embed": "x"}),
])
def test_bad_hparam_values_are_user_errors(name: str, hparams: dict) -> None:
    with pytest.raises(UserError, match="hparams"):
        make(name, **hparams)


@pytest.mark.parametrize("name", ["cutmix", "augmix", "cbn", "mbn", "augmix_metabn"])
def test_random_methods_resume_exactly(name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Methods draw their randomness from the per-epoch seeded RNG, so resuming is exact."""
    cfg = tiny_train_config(method=name, epochs=2, data={"train_size": 64},
                            optim={"batch_size": 32})
    assert_resume_is_exact(cfg, tmp_path, monkeypatch)
