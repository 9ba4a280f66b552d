"""Meta-BN at test time: under every protocol the shift z is measured against the source
statistics while the protocol sets what normalises; rows say which (and whether the prediction
is transductive); the evaluation-only controls zero-z, shuffle-z and static.

References are computed in float64 from the definitions (models/metabn.py,
evaluation/metabn_eval.py), independently of the layer's fused code paths.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from metabn_bench.errors import UserError
from metabn_bench.evaluation import metabn_eval
from metabn_bench.evaluation.protocols import make_protocol
from metabn_bench.models.metabn import MetaBatchNorm2d
from metabn_bench.models.norms import make_norm

C = 6
SOURCE = (torch.empty(C).uniform_(-1, 1, generator=torch.Generator().manual_seed(0)),
          torch.empty(C).uniform_(0.5, 2, generator=torch.Generator().manual_seed(1)))
TOL = {"rtol": 1e-4, "atol": 1e-4}  # the layer computes in float32


def _layer(stats_source: str = "instance") -> MetaBatchNorm2d:
    """One trained-like Meta-BN layer: source statistics and a random auxiliary net."""
    torch.manual_seed(0)
    layer = make_norm("metabn", stats_source=stats_source)(C)
    with torch.no_grad():
        layer.running_mean.copy_(SOURCE[0])
        layer.running_var.copy_(SOURCE[1])
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
        for p in layer.aux.parameters():
            p.normal_(0, 0.3)
    return layer.eval()


def _shifted_batch(n: int = 8) -> Tensor:
    """A batch far from the source statistics (every sample shifted and scaled)."""
    torch.manual_seed(1)
    return torch.randn(n, C, 5, 5) * 2.5 + 1.5


def _reference(layer: MetaBatchNorm2d, x: Tensor, norm_mean: Tensor, norm_var: Tensor,
               z: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """float64: (output, z) of the layer normalising with (norm_mean, norm_var) and with its
    shift z measured against the source statistics (SOURCE), from the definition."""
    x = x.double()
    eps = layer.eps
    src_mean, src_var = SOURCE[0].double(), SOURCE[1].double() + eps
    mu = x.mean(dim=(2, 3))
    var = x.var(dim=(2, 3), unbiased=False)
    if layer.stats_source == "batch":
        mu = x.mean(dim=(0, 2, 3)).expand_as(mu)
        var = x.var(dim=(0, 2, 3), unbiased=False).expand_as(var)
    if z is None:
        z = torch.cat([(mu - src_mean) / src_var.sqrt(),
                       0.5 * (torch.log(var + eps) - torch.log(src_var))], dim=1)
    raw = copy.deepcopy(layer.aux).double()(z)
    dg, db = layer.bound * torch.tanh(raw[:, :C]), layer.bound * torch.tanh(raw[:, C:])
    x_hat = (x - norm_mean.double().view(1, -1, 1, 1)) / torch.sqrt(
        norm_var.double().view(1, -1, 1, 1) + eps)
    gamma = layer.weight.double() * (1 + dg)
    beta = layer.bias.double() + db
    return x_hat * gamma[:, :, None, None] + beta[:, :, None, None], z


def _batch_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.double()
    return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)


@pytest.mark.parametrize("stats_source", ["instance", "batch"])
@pytest.mark.parametrize("spec", ["none", "bn", "bn:prior=16", "tent"])
def test_z_is_measured_against_source_statistics_under_every_protocol(
        spec: str, stats_source: str) -> None:
    layer = _layer(stats_source)
    source = (layer.running_mean.clone(), layer.running_var.clone())
    model = nn.Sequential(layer)
    x = _shifted_batch()
    bmean, bvar = _batch_moments(x)
    if spec == "none":
        norm = source
    elif spec == "bn:prior=16":
        p = 16 / (16 + x.shape[0])
        norm = (p * source[0].double() + (1 - p) * bmean, p * source[1].double() + (1 - p) * bvar)
    else:
        norm = (bmean, bvar)
    expected, z = _reference(layer, x, *norm)  # before Tent updates gamma and beta
    protocol = make_protocol(spec, model, model)
    out = protocol.predict(x)  # tent: the prediction is the forward before its update
    torch.testing.assert_close(out.double(), expected, **TOL)
    assert z[:, :C].abs().mean() > 0.5  # the shifted batch is seen as shifted
    torch.testing.assert_close(layer.relative_statistics(x).double(), z, **TOL)
    assert torch.equal(layer.source_mean, source[0]) and torch.equal(layer.source_var, source[1])


def test_bn_protocol_normalises_with_the_batch_but_corrects_for_the_source_shift() -> None:
    layer = _layer()
    model = nn.Sequential(layer)
    x = _shifted_batch()
    make_protocol("bn", model, model).predict(x)
    # the running statistics now hold the batch's (what normalises) ...
    bmean, bvar = _batch_moments(x)
    torch.testing.assert_close(layer.running_mean.double(), bmean, **TOL)
    # ... and z against them would be about zero: the defect that pinning the source fixes
    z_batch = torch.cat([(x.double().mean(dim=(2, 3)) - bmean) / torch.sqrt(bvar + layer.eps)],
                        dim=1)
    assert z_batch.mean(0).abs().max() < 1e-6
    assert layer.relative_statistics(x)[:, :C].mean(0).abs().max() > 0.3


@pytest.mark.parametrize(("spec", "stats_source", "normalisation", "transductive"), [
    ("none", "instance", "source", False),
    ("none", "batch", "source", True),
    ("bn", "instance", "test batch", True),
    ("bn:prior=16", "instance", "prior-mixed (N=16): N/(N+n) source + n/(N+n) test batch", True),
    ("tent", "instance", "test batch", True),
    ("none:control=zero-z", "instance", "source", False),
])
def test_rows_record_the_z_reference_normalisation_and_transductivity(
        spec: str, stats_source: str, normalisation: str, transductive: bool) -> None:
    model = nn.Sequential(_layer(stats_source))
    fields = make_protocol(spec, model, model).row_fields()
    control = spec.partition("control=")[2] or "none"
    assert fields == {"transductive": transductive,
                      "metabn": {"z_reference": "source", "normalisation": normalisation,
                                 "stats_source": stats_source, "control": control}}
    plain = nn.Sequential(nn.BatchNorm2d(C).eval())
    assert make_protocol(spec.partition(":")[0], plain, plain).row_fields() == {}


def test_zero_z_feeds_the_auxiliary_nets_zero() -> None:
    layer = _layer()
    model = nn.Sequential(layer)
    x = _shifted_batch()
    out = make_protocol("none:control=zero-z", model, model).predict(x)
    expected, _ = _reference(layer, x, *SOURCE,
                             z=torch.zeros(x.shape[0], 2 * C, dtype=torch.float64))
    torch.testing.assert_close(out.double(), expected, **TOL)
    dg, db = layer.last_corrections
    assert torch.equal(dg, dg[:1].expand_as(dg)) and torch.equal(db, db[:1].expand_as(db))


def test_shuffle_z_permutes_the_corrections_within_the_batch_and_restarts_each_cell() -> None:
    layer = _layer()
    model = nn.Sequential(layer)
    x = _shifted_batch(16)
    with torch.no_grad():
        model(x)
    dg, db = layer.last_corrections
    protocol = make_protocol("bn:control=shuffle-z", model, model)
    first = protocol.predict(x)
    sdg, sdb = layer.last_corrections
    # every sample's corrections are those another sample's z gives (a permutation) ...
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(metabn_eval.SHUFFLE_SEED))
    assert not torch.equal(perm, torch.arange(16))
    torch.testing.assert_close(sdg, dg[perm], **TOL)
    torch.testing.assert_close(sdb, db[perm], **TOL)
    # ... the normalisation is the protocol's (bn: the batch), and z the shuffled source one
    _, z = _reference(layer, x, *SOURCE)
    expected, _ = _reference(layer, x, *_batch_moments(x), z=z[perm])
    torch.testing.assert_close(first.double(), expected, **TOL)
    assert not torch.equal(protocol.predict(x), first)  # the next batch draws again
    protocol.reset()
    assert torch.equal(protocol.predict(x), first)  # each cell starts from the same seed


def test_static_control_uses_the_mean_corrections_over_clean_images() -> None:
    layer = _layer()
    model = nn.Sequential(layer)
    torch.manual_seed(2)
    images = (torch.rand(10, 5, 5, C) * 255).to(torch.uint8).numpy()

    def forward(x: Tensor) -> Tensor:  # "images" with C channels, straight into the layer
        return model(x * 4 - 2)

    means = metabn_eval.mean_corrections(model, forward, images, torch.device("cpu"),
                                         torch.contiguous_format, batch_size=3)
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255 * 4 - 2
    _, z = _reference(layer, inputs, *SOURCE)
    raw = copy.deepcopy(layer.aux).double()(z)
    ref_dg = (layer.bound * torch.tanh(raw[:, :C])).mean(0)
    ref_db = (layer.bound * torch.tanh(raw[:, C:])).mean(0)
    torch.testing.assert_close(torch.tensor(means["0"][0], dtype=torch.float64), ref_dg, **TOL)
    torch.testing.assert_close(torch.tensor(means["0"][1], dtype=torch.float64), ref_db, **TOL)

    asked: list[int] = []
    protocol = make_protocol("bn:control=static,static_images=10", model, model,
                             lambda n: asked.append(n) or means)
    x = _shifted_batch()
    out = protocol.predict(x)
    assert asked == [10]
    dg, db = layer.last_corrections
    assert torch.equal(dg, dg[:1].expand_as(dg)) and torch.equal(db, db[:1].expand_as(db))
    bmean, bvar = _batch_moments(x)
    x_hat = (x.double() - bmean.view(1, -1, 1, 1)) / torch.sqrt(bvar.view(1, -1, 1, 1) + layer.eps)
    expected = (x_hat * (layer.weight.double() * (1 + ref_dg)).view(1, -1, 1, 1)
                + (layer.bias.double() + ref_db).view(1, -1, 1, 1))
    torch.testing.assert_close(out.double(), expected, **TOL)


def test_static_corrections_are_stored_with_provenance_and_reused(tmp_path: Path) -> None:
    from tests.helpers import tiny_train_config

    cfg = tiny_train_config(method="metabn", data={"dataset": "synthetic", "train_size": 64})
    model = nn.Sequential(_layer())
    calls: list[int] = []

    def forward(x: Tensor) -> Tensor:
        calls.append(x.shape[0])
        return model(x.mean(1, keepdim=True).expand(-1, C, -1, -1))

    layers = metabn_eval.static_corrections(tmp_path, model, forward, cfg, torch.device("cpu"),
                                            torch.contiguous_format, 20)
    stored = json.loads((tmp_path / "metabn_static-n20.json").read_text())
    assert stored["layers"] == layers and stored["images"] == 20 and stored["split"] == "train"
    assert stored["provenance"]["commit"] and stored["run_id"] == tmp_path.name
    assert sum(calls) == 20
    again = metabn_eval.static_corrections(tmp_path, model, forward, cfg, torch.device("cpu"),
                                           torch.contiguous_format, 20)
    assert again == layers and sum(calls) == 20  # read back, not recomputed


@pytest.mark.parametrize(("spec", "message"), [
    ("none:control=freeze", "unknown Meta-BN control 'freeze'; valid: zero-z, shuffle-z, static"),
    ("none:static_images=5", "static_images is for control=static only"),
    ("none:control=static,static_images=0", "static_images is 0; valid: an integer >= 1"),
])
def test_bad_controls_are_one_line_errors(spec: str, message: str) -> None:
    model = nn.Sequential(_layer())
    with pytest.raises(UserError, match=message):
        make_protocol(spec, model, model, lambda n: {})


def test_comma_separated_specs_keep_each_protocols_options() -> None:
    from metabn_bench.evaluation.protocols import split_specs

    assert split_specs("none, bn:prior=16,control=zero-z,tent:lr=0.01,steps=2,bn") == (
        "none", "bn:prior=16,control=zero-z", "tent:lr=0.01,steps=2", "bn")


def test_controls_need_auxiliary_nets() -> None:
    plain = nn.Sequential(nn.BatchNorm2d(C).eval())
    with pytest.raises(UserError, match="needs a model with Meta-BN auxiliary nets"):
        make_protocol("none:control=zero-z", plain, plain)


def test_evaluate_runs_the_controls_and_records_them_in_every_row(
        tmp_path: Path, corrupted_set: Path, trained_run: Path) -> None:
    from metabn_bench.evaluation.evaluate import evaluate
    from metabn_bench.reporting.report import build_report
    from metabn_bench.training.loop import train
    from tests.helpers import tiny_train_config

    cfg = tiny_train_config(method="metabn", data={"train_size": 64},
                            hparams={"stats_source": "batch"})
    run = train(cfg, tmp_path / "run", progress=False).run_dir
    specs = ("none", "none:control=zero-z", "bn:control=shuffle-z",
             "none:control=static,static_images=16")
    rows = evaluate(run, corrupted_set, specs, batch_size=20, progress=False)
    assert {r["protocol"] for r in rows} == set(specs)
    for r in rows:
        control = r["protocol"].partition("control=")[2].partition(",")[0] or "none"
        assert r["transductive"] is True  # stats_source=batch: even `none`
        assert r["metabn"] == {"z_reference": "source", "stats_source": "batch",
                               "control": control,
                               "normalisation": "test batch" if r["protocol"].startswith("bn")
                               else "source"}
    stored = json.loads((run / "metabn_static-n16.json").read_text())
    assert stored["images"] == 16 and len(stored["layers"]) == 7  # WRN-10-1: 7 Meta-BN layers
    assert len(build_report(rows, {}).rows) > 0  # the report reads the rows of every control
    from typer.testing import CliRunner

    from metabn_bench.cli import app

    # the command line: a protocol's options stay with it in a comma-separated --adapt
    result = CliRunner().invoke(app, ["evaluate", str(run), "--corrupted", str(corrupted_set),
                                      "--adapt", "none:control=static,static_images=16,none",
                                      "--batch-size", "20", "--no-progress"])
    assert result.exit_code == 0, result.output
    # a copy: the session's shared vanilla run must not gain rows other tests do not expect
    plain = tmp_path / "vanilla"
    shutil.copytree(trained_run, plain)
    with pytest.raises(UserError, match="needs a model with Meta-BN auxiliary nets"):
        evaluate(plain, corrupted_set, ("none:control=zero-z",), progress=False)
    vanilla = evaluate(plain, corrupted_set, ("none",), batch_size=20, progress=False)
    assert all("metabn" not in r and "transductive" not in r for r in vanilla)
