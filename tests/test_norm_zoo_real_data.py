"""The normalisation zoo on real images: each method through the CLI's `train`, `evaluate` and
`report` on a small subset of the CIFAR-10 JPEG copy in ../shared/data (skipped where absent).

The subset is extracted into a temporary ImageFolder tree (`folder:DIR`, with the data source's
label in its dataset.json); nothing of the copy is kept. The numbers are those of one epoch on
200 images, so only that every cell of every protocol has a finite number (or a not-applicable
reason) is checked, never their size.
"""

from __future__ import annotations

import json
import math
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabn_bench.cli import app
from tests.helpers import SHARED
from tests.suite_helpers import OneThread

ZOO = ("gn", "ibn", "bgn", "iebn", "proxy_norm", "cbn", "mbn", "bn_embeddings")
ARCHIVE = SHARED / "cifar10-jpeg.tar.gz"
SOURCE = "CIFAR-10, JPEG copy"
# 20 training and 3 test images per class: 200 and 30 images, four training steps of 64, and
# two test batches of 15 per cell (Tent's update acts on the second).
PER_CLASS = {"train": 20, "test": 3}
CORRUPTIONS = "gaussian_noise,contrast"  # a noise and a tonal corruption
SEVERITIES = "1,3,5"
PROTOCOLS = ("none", "bn", "tent")
# Protocols without batch statistics to adapt: their rows say why instead of repeating `none`.
NOT_APPLICABLE = {"gn": {"bn", "tent"}, "proxy_norm": {"bn", "tent"}}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first PER_CLASS images of each class and split, as `train|test/<class>/*.jpg`."""
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} is not here (the CIFAR-10 JPEG copy of ../shared/data)")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    taken: Counter[tuple[str, str]] = Counter()
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in PER_CLASS:
                continue
            split, cls, name = parts
            if taken[split, cls] >= PER_CLASS[split]:
                continue
            taken[split, cls] += 1
            source = tar.extractfile(member)
            assert source is not None
            dest = root / split / cls / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read())
    assert sorted(taken.values()) == [3] * 10 + [20] * 10, taken
    (root / "dataset.json").write_text(json.dumps({"name": SOURCE}))
    return root


@pytest.fixture(scope="module")
def jpeg_corrupted(jpeg_tree: Path) -> Path:
    out = jpeg_tree.parent / "corrupted"
    result = CliRunner().invoke(app, ["corrupt", "--dataset", f"folder:{jpeg_tree}", "--out",
                                      str(out), "--corruptions", CORRUPTIONS, "--severities",
                                      SEVERITIES, "--preset", "cifar", "--device", "cpu",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("method", ZOO)
def test_zoo_method_trains_evaluates_and_reports_on_real_images(
        method: str, jpeg_tree: Path, jpeg_corrupted: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "runs" / method
    with OneThread():
        trained = runner.invoke(app, [
            "train", "--method", method, "--dataset", f"folder:{jpeg_tree}", "--arch", "wrn10_1",
            "--epochs", "1", "--device", "cpu", "--out", str(run), "--no-progress",
            "--set", "optim.batch_size=64"])
        assert trained.exit_code == 0, trained.output
        evaluated = runner.invoke(app, [
            "evaluate", str(run), "--corrupted", str(jpeg_corrupted), "--adapt", ",".join(PROTOCOLS),
            "--batch-size", "15", "--device", "cpu", "--no-progress"])
        assert evaluated.exit_code == 0, evaluated.output
    reported = runner.invoke(app, ["report", str(run), "--format", "json"])
    assert reported.exit_code == 0, reported.output
    report = json.loads(reported.output)
    assert report["provenance"]["data_source"] == SOURCE
    rows = {r["protocol"]: r for r in report["rows"] if r["method"] == method}
    skipped = NOT_APPLICABLE.get(method, set())
    assert set(rows) == set(PROTOCOLS) - skipped, sorted(rows)
    for protocol, row in rows.items():
        assert row["corruptions"] == CORRUPTIONS.split(","), (protocol, row)
        clean, mce = row["clean_error"], row["mce"]
        assert isinstance(clean, float) and 0 <= clean <= 100, (protocol, clean)
        assert isinstance(mce, float) and math.isfinite(mce) and mce >= 0, (protocol, mce)
    listed = {r["protocol"] for r in report.get("not_applicable", []) if r["method"] == method}
    assert listed == skipped
