"""Per-image vectors from evaluation, report plots, and class activation maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from metabn_bench import fsio
from metabn_bench.analysis.cam import CamRequest, cam_grid, class_activation_map, grad_cam
from metabn_bench.cli import app
from metabn_bench.errors import UserError
from metabn_bench.evaluation import per_image
from metabn_bench.evaluation.evaluate import EVAL_FILE, evaluate
from metabn_bench.models import build_model
from metabn_bench.reporting.plots import write_plots
from metabn_bench.reporting.report import build_report, collect, format_report, report_from_paths
from tests.report_fixtures import make_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pack_round_trip() -> None:
    v = np.random.default_rng(0).random(203) > 0.5
    assert np.array_equal(per_image.unpack(per_image.pack(v), 203), v)
    assert per_image.pack(v).nbytes == 26


def test_evaluation_stores_vectors_resumably(trained_run: Path, corrupted_set: Path,
                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(EVAL_FILE, per_image.RUN_FILE))
    rows = evaluate(run, corrupted_set, ("none",), progress=False)
    vectors = per_image.load_run(run, rows)
    assert len(vectors) == len(rows) and all(r["per_image"] is True for r in rows)
    for r in rows:
        assert int((~vectors[per_image.row_key(r)]).sum()) == r["errors"]
    # Interrupted after the vector but before its row: the cell is redone, identically.
    fsio.write_jsonl(run / EVAL_FILE, rows[:-3])
    again = evaluate(run, corrupted_set, ("none",), progress=False)
    assert [r["errors"] for r in again] == [r["errors"] for r in rows]
    redone = per_image.load_run(run, again)
    assert all(np.array_equal(redone[k], vectors[k]) for k in vectors)
    # Rows from before vectors existed still report, with the interval explained as missing.
    old = [{k: v for k, v in r.items() if k != "per_image"} for r in again]
    fsio.write_jsonl(run / EVAL_FILE, old)
    (run / per_image.RUN_FILE).unlink()
    found = collect([run])
    assert found.vectors == {} and len(found.rows) == len(rows)
    assert build_report(found.rows, {})["rows"][0]["method"] == "vanilla"
    # A tree with an unfinished run beside it: the report lists it, with the reason.
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text('{"method": "mixup", "seed": 2}')
    (tmp_path / "half" / "env.json").write_text("{}")
    text = format_report(report_from_paths([tmp_path], plots_dir=tmp_path / "plots"), "markdown",
                         doc_dir=tmp_path)
    assert "run not finished (no 'done' marker)" in text and "(plots/clean_vs_corrupted.png)" in text


def test_plots_are_pngs_and_repeatable(tmp_path: Path) -> None:
    rows, vectors = make_rows(protocols=("none", "bn"))
    report = build_report(rows, {}, vectors=vectors, resamples=50)
    made = write_plots(report, tmp_path / "a")
    names = sorted(p.name for _, p in made)
    assert names == sorted(["clean_vs_corrupted.png", "error_vs_severity_bn.png",
                            "error_vs_severity_none.png", "errors_by_corruption_bn.png",
                            "errors_by_corruption_none.png"])
    for _, path in made:
        assert path.read_bytes().startswith(PNG_MAGIC)
    again = write_plots(report, tmp_path / "b")
    assert [p.read_bytes() for _, p in made] == [p.read_bytes() for _, p in again]


def test_gradcam_on_the_last_feature_map_is_relu_cam_up_to_scale() -> None:
    torch.manual_seed(0)
    model = build_model("wrn10_1", 10).eval()
    x = torch.randn(3, 3, 32, 32)
    targets = torch.tensor([1, 4, 7])
    cam = class_activation_map(model, x, targets)
    h, w = cam.shape[1:]
    torch.testing.assert_close(grad_cam(model, x, targets), torch.relu(cam) / (h * w),
                               rtol=1e-4, atol=1e-6)
    # Independent check of CAM: logits are the spatial mean of the map plus the bias.
    logits = model(x).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(cam.mean(dim=(1, 2)) + model.classifier.bias[targets], logits,
                               rtol=1e-4, atol=1e-5)


def test_gradcam_at_a_named_layer() -> None:
    model = build_model("wrn10_1", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    shapes = {}

    def keep_shape(_m: torch.nn.Module, _a: object, out: torch.Tensor) -> None:
        shapes["s"] = out.shape

    handle = model.blocks[1].register_forward_hook(keep_shape)
    model(x)
    handle.remove()
    maps = grad_cam(model, x, torch.tensor([0, 1]), layer="blocks.1")
    assert maps.shape == (2, *shapes["s"][2:]) and (maps >= 0).all()
    with pytest.raises(UserError, match="unknown layer 'nope'; valid: .*blocks.1"):
        grad_cam(model, x, torch.tensor([0, 1]), layer="nope")


def test_cam_grid_png_and_cli(trained_run: Path, corrupted_set: Path, tmp_path: Path) -> None:
    out = cam_grid([trained_run, trained_run], corrupted_set, tmp_path / "cam.png",
                   CamRequest(n_images=2, kind="both", corruptions=("contrast",), severity=5),
                   device="cpu")
    with Image.open(out) as img:
        meta = json.loads(img.info["Description"])
        assert img.width > 400
    assert meta["conditions"] == ["clean", "contrast"] and meta["kinds"] == ["gradcam", "cam"]
    assert meta["runs"] == [str(trained_run)] * 2 and len(meta["images"]) == 2
    runner = CliRunner()
    ok = runner.invoke(app, ["cam", str(trained_run), "--corrupted", str(corrupted_set), "--out",
                             str(tmp_path / "c.png"), "--images", "0,3", "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert "Usage" in runner.invoke(app, ["cam", "--help"]).output
    for args, message in ((["--corruptions", "rain"], "unknown corruption in this set 'rain'"),
                          (["--images", "99999"], "image indices must be in"),
                          (["--kind", "saliency"], "unknown CAM kind 'saliency'; valid: ")):
        bad = runner.invoke(app, ["cam", str(trained_run), "--corrupted", str(corrupted_set),
                                  "--out", str(tmp_path / "x.png"), "--device", "cpu", *args])
        assert bad.exit_code == 2 and message in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
