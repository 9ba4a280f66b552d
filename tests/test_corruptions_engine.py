"""Size presets, the imagecorruptions backend, missing optional packages, set-level seeding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metabn_bench.config import CorruptConfig
from metabn_bench.corruptions import COMMON, reference_backend, tables, textures
from metabn_bench.corruptions.generate import corrupt_dataset, corrupt_images
from metabn_bench.corruptions.names import CBAR
from metabn_bench.corruptions.ops import CORRUPTIONS
from metabn_bench.data.synthetic import make_split
from metabn_bench.errors import UserError

CPU = torch.device("cpu")


def test_every_reference_corruption_is_registered() -> None:
    minus_c = set(COMMON) | {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert set(CORRUPTIONS.names()) == minus_c | set(CBAR)
    for preset in tables.TABLES:
        assert set(tables.table(preset)) == minus_c
        assert all(len(v) == 5 for v in tables.table(preset).values())
    assert set(tables.cbar_table("cifar")) | set(tables.cbar_table("imagenet")) == set(CBAR)
    assert all(len(v) == 5 for v in tables.cbar_table("cifar").values())


def test_auto_preset_picks_by_size_and_refuses_sizes_without_a_table() -> None:
    assert tables.choose_preset("auto", 32)[0] == "cifar"
    assert tables.choose_preset("auto", 64)[0] == "tinyimagenet"
    assert tables.choose_preset("auto", 224)[0] == "imagenet"
    with pytest.raises(UserError, match="no parameter table for 48x48 images; name one"):
        tables.choose_preset("auto", 48)
    assert tables.choose_preset("imagenet", 48) == ("imagenet", "size preset 'imagenet' (named)")
    assert len({tables.table_hash(p) for p in tables.TABLES}) == 3


def test_named_preset_runs_every_corruption_off_its_native_size() -> None:
    images = make_split("test", 2).images
    big = np.concatenate([np.concatenate([images, images], 1)] * 2, 2)  # 64x64
    for name in CORRUPTIONS.names():
        # ImageNet-C-bar's own five have no entry in the CIFAR tables
        preset = "imagenet" if name in CBAR and name not in tables.CBAR_CIFAR else "cifar"
        out = corrupt_images(big, name, 5, tables.params(preset, name, 5), 0, CPU)
        assert out.shape == big.shape and out.dtype == np.uint8


def test_imagecorruptions_backend_only_with_the_imagenet_table(tmp_path: Path) -> None:
    clean = make_split("test", 4)
    cfg = CorruptConfig(backend="imagecorruptions", corruptions=("contrast",))
    with pytest.raises(UserError, match="implements only the ImageNet-C table.*--preset imagenet"):
        corrupt_dataset(clean, tmp_path / "a", cfg, CPU, progress=False)
    assert not (tmp_path / "a").exists()


def test_imagecorruptions_backend_is_reproducible_and_agrees_on_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("imagecorruptions")
    clean = make_split("test", 4)
    cfg = CorruptConfig(preset="imagenet", backend="imagecorruptions",
                        corruptions=("brightness", "gaussian_noise"), severities=(2,))
    cset, _ = corrupt_dataset(clean, tmp_path / "ic", cfg, CPU, progress=False)
    manifest = json.loads((tmp_path / "ic" / "manifest.json").read_text())
    assert manifest["backend"] == "imagecorruptions"
    assert manifest["backend_package"].startswith("imagecorruptions")
    again = reference_backend.corrupt_images(clean.images, "gaussian_noise", 2, 0)
    np.testing.assert_array_equal(cset.cell("gaussian_noise", 2), again)
    ours = corrupt_images(clean.images, "brightness", 2, tables.params("imagenet", "brightness", 2),
                          0, CPU)
    np.testing.assert_array_equal(cset.cell("brightness", 2), ours)


def test_frost_without_the_reference_package_is_a_one_line_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named '{name}'")

    textures.frost_sources.cache_clear()
    textures._frost_bank_cpu.cache_clear()
    textures._DEVICE_BANKS.clear()
    monkeypatch.setattr(textures.importlib.resources, "files", missing)
    images = make_split("test", 2).images
    with pytest.raises(UserError, match="pip install imagecorruptions-imaug") as err:
        corrupt_images(images, "frost", 1, tables.params("cifar", "frost", 1), 0, CPU)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    textures.frost_sources.cache_clear()


def test_set_bytes_do_not_depend_on_batch_size(tmp_path: Path) -> None:
    clean = make_split("test", 24)
    names = ("shot_noise", "glass_blur", "snow", "frost", "elastic_transform")
    a, _ = corrupt_dataset(clean, tmp_path / "a", CorruptConfig(corruptions=names,
                                                                severities=(1, 5), batch_size=500),
                           CPU, progress=False)
    b, _ = corrupt_dataset(clean, tmp_path / "b", CorruptConfig(corruptions=names,
                                                                severities=(1, 5), batch_size=7),
                           CPU, progress=False)
    for name in names:
        assert a.manifest["files"][name]["sha256"] == b.manifest["files"][name]["sha256"]


def test_set_bytes_do_not_depend_on_worker_threads(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from metabn_bench.corruptions import generate

    clean = make_split("test", 10)
    cfg = CorruptConfig(corruptions=("gaussian_noise", "motion_blur", "fog"), severities=(2, 4))
    monkeypatch.setattr(generate, "cpu_workers", lambda: 1)
    one, _ = corrupt_dataset(clean, tmp_path / "one", cfg, CPU, progress=False)
    monkeypatch.setattr(generate, "cpu_workers", lambda: 3)
    three, _ = corrupt_dataset(clean, tmp_path / "three", cfg, CPU, progress=False)
    for name in cfg.corruptions:
        assert one.manifest["files"][name]["sha256"] == three.manifest["files"][name]["sha256"]
