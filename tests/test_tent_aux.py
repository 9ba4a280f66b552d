"""The `tent_aux` protocol: Tent's entropy minimisation (Wang et al. 2021) on the last layer of
Meta-BN's auxiliary nets only, with the source statistics; reset per cell; n/a without them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from metabn_bench.evaluation.evaluate import evaluate
from metabn_bench.evaluation.protocols import NotApplicableError, make_protocol
from metabn_bench.models import build_model
from metabn_bench.models.metabn import auxiliary_parameters, meta_bn_layers
from metabn_bench.models.norms import make_norm

# State-dict names of the auxiliary nets' last layers, per aux_net (models/aux_nets.py).
LAST_LAYER = {"se_mlp": ("aux.fc2.weight", "aux.fc2.bias"), "per_channel": ("aux.w2", "aux.b2"),
              "shared": ("hypernet.fc2.weight", "hypernet.fc2.bias")}


def _metabn_model(aux_net: str = "se_mlp") -> nn.Module:
    """A WRN-10-1 with Meta-BN layers whose auxiliary nets and statistics look trained."""
    torch.manual_seed(0)
    model = build_model("wrn10_1", 10, make_norm("metabn", aux_net=aux_net))
    with torch.no_grad():
        for p in auxiliary_parameters(model):
            p.normal_(0, 0.3)
        for m in meta_bn_layers(model):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


def _entropy(logits: torch.Tensor) -> float:
    p = logits.softmax(1)
    return float(-(p * p.log()).sum(1).mean())


@pytest.mark.parametrize("aux_net", ["se_mlp", "per_channel", "shared"])
def test_only_the_auxiliary_last_layers_change(aux_net: str) -> None:
    model = _metabn_model(aux_net)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    protocol = make_protocol("tent_aux", model, model)
    x = torch.rand(16, 3, 16, 16)
    for _ in range(3):
        protocol.predict(x)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    last = {k for k in before if k.endswith(LAST_LAYER[aux_net])}
    assert changed == last  # every last layer moved; everything else bit for bit as before
    assert not any(m.training for m in model.modules())  # source statistics, not the batch's


def test_entropy_decreases_on_a_fixed_batch_and_the_reset_is_complete() -> None:
    model = _metabn_model()
    protocol = make_protocol("tent_aux:lr=0.01", model, model)
    x = torch.rand(32, 3, 16, 16)
    first = protocol.predict(x)
    later = [protocol.predict(x) for _ in range(5)]
    assert _entropy(later[-1]) < _entropy(first)
    protocol.reset()
    torch.testing.assert_close(protocol.predict(x), first)  # model and Adam state restored
    assert protocol.describe() == {"lr": 0.01, "steps": 1, "optimizer": "Adam(0.9, 0.999)",
                                   "params": "auxiliary nets' last layers"}


def test_not_applicable_without_auxiliary_nets(trained_run: Path, small_set: Path,
                                               tmp_path: Path) -> None:
    plain = build_model("wrn10_1", 10).eval()
    with pytest.raises(NotApplicableError, match="protocol 'tent_aux' is not applicable.*"
                                                 "no Meta-BN auxiliary nets"):
        make_protocol("tent_aux", plain, plain)
    run = tmp_path / "run"  # a copy: the shared run's eval.jsonl stays as other tests expect
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval.jsonl"))
    rows = evaluate(run, small_set, ("tent_aux",), batch_size=6, progress=False)
    assert rows and all(r["applicable"] is False and "no Meta-BN auxiliary nets" in r["reason"]
                        for r in rows)
