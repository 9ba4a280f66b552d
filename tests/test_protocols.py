"""Test-time protocols against their papers: BN adaptation (Schneider et al. 2020) and Tent
(Wang et al. 2021) change state only during evaluation and start every cell from the model."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from metabn_bench.config import CorruptConfig
from metabn_bench.corruptions.generate import corrupt_dataset
from metabn_bench.data.store import open_set
from metabn_bench.data.synthetic import make_split
from metabn_bench.evaluation.evaluate import _Evaluator, _warn_if_class_sorted, evaluate
from metabn_bench.evaluation.protocols import batch_statistics, bn_layers, make_protocol
from metabn_bench.models import build_model
from metabn_bench.training.loop import load_config


def test_batch_statistics_match_float64_reference() -> None:
    x = (torch.randn(64, 5, 8, 8) * 3 + 7).contiguous(memory_format=torch.channels_last)
    mean, var = batch_statistics(x)
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var.double(), ref_var, rtol=1e-4, atol=1e-4)
    assert mean.dtype == var.dtype == torch.float32


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("wrn10_1", 10)
    with torch.no_grad():
        for m in bn_layers(model):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


def _stats(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in bn_layers(model) for t in (m.running_mean, m.running_var)]


def test_bn_adaptation_changes_running_statistics_only_while_evaluating() -> None:
    model = _model()
    source = _stats(model)
    protocol = make_protocol("bn", model, model)
    assert all(torch.equal(a, b) for a, b in zip(_stats(model), source))  # setting up: no change
    x = torch.rand(32, 3, 32, 32)
    protocol.predict(x)
    first = bn_layers(model)[0]
    torch.testing.assert_close(first.running_mean, model.conv1(x).mean(dim=(0, 2, 3)))
    protocol.reset()
    assert all(torch.equal(a, b) for a, b in zip(_stats(model), source))
    plain = _model()
    make_protocol("none", plain, plain).predict(x)
    assert all(torch.equal(a, b) for a, b in zip(_stats(plain), source))  # 'none' never adapts


def test_bn_prior_mixes_source_and_test_statistics_with_weight_n_over_n_plus_batch() -> None:
    model = _model()
    mean_src = bn_layers(model)[0].running_mean.clone()
    x = torch.rand(16, 3, 32, 32)
    protocol = make_protocol("bn:prior=16", model, model)
    protocol.predict(x)
    mean_test = model.conv1(x).mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn_layers(model)[0].running_mean, 0.5 * mean_src + 0.5 * mean_test)


def test_tent_minimises_entropy_and_restarts_each_cell() -> None:
    model = _model()
    protocol = make_protocol("tent", model, model)
    x = torch.rand(32, 3, 16, 16)

    def entropy(logits: torch.Tensor) -> float:
        p = logits.softmax(1)
        return float(-(p * p.log()).sum(1).mean())

    first = protocol.predict(x)
    later = [protocol.predict(x) for _ in range(5)]
    assert entropy(later[-1]) < entropy(first)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "conv" in n)
    protocol.reset()
    torch.testing.assert_close(protocol.predict(x), first)  # model and Adam state restored


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two corruptions at two severities of 20 synthetic test images (5 cells with clean)."""
    root = tmp_path_factory.mktemp("small") / "set"
    cfg = CorruptConfig(preset="cifar", corruptions=("gaussian_noise", "contrast"), severities=(3, 5))
    corrupt_dataset(make_split("test", 20), root, cfg, torch.device("cpu"), "synthetic",
                    progress=False)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluation_leaves_the_trained_model_as_it_was(trained_run: Path, small_set: Path,
                                                        tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval.jsonl"))
    before = _sha(run / "model.pt")
    rows = evaluate(run, small_set, ("bn", "tent"), batch_size=10, progress=False)
    assert _sha(run / "model.pt") == before
    assert len(rows) == 2 * 5 and {r["protocol"] for r in rows} == {"bn", "tent"}
    assert all(r["reset"] == "per cell" and r["test_batch_size"] == 10 for r in rows)
    assert rows[0]["protocol_options"] == {"prior": 0.0}
    assert rows[-1]["protocol_options"]["lr"] == 1e-3


@pytest.mark.parametrize("spec", ["bn", "tent"])
def test_a_cell_does_not_depend_on_the_cells_before_it(trained_run: Path, small_set: Path,
                                                       spec: str) -> None:
    cset = open_set(small_set)
    cfg = load_config(trained_run)
    a = cset.cell(cset.corruptions[0], 5)
    b = cset.cell(cset.corruptions[-1], 3)
    fresh = _Evaluator(trained_run, cfg, 10, torch.device("cpu"), spec)
    alone = int((~fresh.correct(np.asarray(b), cset.labels, 10)).sum())
    used = _Evaluator(trained_run, cfg, 10, torch.device("cpu"), spec)
    used.correct(np.asarray(a), cset.labels, 10)
    assert int((~used.correct(np.asarray(b), cset.labels, 10)).sum()) == alone


def test_class_sorted_test_sets_warn_for_adaptive_protocols() -> None:
    sorted_labels = np.repeat(np.arange(3), 4)
    with pytest.warns(UserWarning, match="sorted by class"):
        _warn_if_class_sorted(sorted_labels, ("none", "bn"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_class_sorted(sorted_labels, ("none",))  # per-image protocol: no effect
        _warn_if_class_sorted(np.array([0, 2, 1, 0, 1, 2]), ("tent",))  # mixed: fine
