"""The corrupted-set store: released layout, manifest, validation, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metabn_bench import fsio
from metabn_bench.config import CorruptConfig
from metabn_bench.corruptions.generate import corrupt_dataset
from metabn_bench.data.store import open_set
from metabn_bench.data.synthetic import make_split
from metabn_bench.errors import UserError


def test_released_layout_round_trip(corrupted_set: Path) -> None:
    cset = open_set(corrupted_set)
    clean = make_split("test", 40)
    assert cset.n == 40 and cset.severities == (1, 2, 3, 4, 5)
    labels = np.load(corrupted_set / "labels.npy")
    np.testing.assert_array_equal(labels, np.tile(clean.labels, 5))
    for name in cset.corruptions:
        arr = np.load(corrupted_set / f"{name}.npy")
        assert arr.shape == (200, 32, 32, 3) and arr.dtype == np.uint8
        np.testing.assert_array_equal(cset.cell(name, 3), arr[80:120])  # severity-major
    manifest = json.loads((corrupted_set / "manifest.json").read_text())
    assert manifest["preset"] == "cifar" and manifest["seed"] == 0
    assert all(len(e["sha256"]) == 64 for e in manifest["files"].values())
    np.testing.assert_array_equal(cset.clean(), clean.images)


def test_a_set_without_manifest_loads_as_released(corrupted_set: Path, tmp_path: Path) -> None:
    released = tmp_path / "CIFAR-10-C"
    released.mkdir()
    for name in ("labels.npy", "contrast.npy", "gaussian_noise.npy"):
        shutil.copy(corrupted_set / name, released / name)
    (released / "notes.npy").write_bytes((corrupted_set / "labels.npy").read_bytes())
    cset = open_set(released)
    assert cset.manifest is None and cset.corruptions == ["gaussian_noise", "contrast"]
    assert cset.ignored == ["notes.npy"] and cset.set_id.startswith("released-")


def test_modified_and_truncated_files_are_caught(corrupted_set: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(corrupted_set, copy)
    arr = np.load(copy / "contrast.npy")
    arr[0, 0, 0, 0] ^= 1
    np.save(copy / "contrast.npy", arr)
    with pytest.raises(UserError, match="does not match its manifest hash"):
        open_set(copy)
    raw = (copy / "contrast.npy").read_bytes()
    (copy / "contrast.npy").write_bytes(raw[:-1000])
    with pytest.raises(UserError, match="contrast.npy"):
        open_set(copy, verify=False)


def test_labels_must_be_tiled(corrupted_set: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(corrupted_set, copy)
    labels = np.load(copy / "labels.npy")
    labels[-1] = (labels[-1] + 1) % 10
    np.save(copy / "labels.npy", labels)
    with pytest.raises(UserError, match="tiled 5 times"):
        open_set(copy, verify=False)


def test_missing_directory_names_the_command() -> None:
    with pytest.raises(UserError, match="metabn-bench corrupt"):
        open_set("/no/such/set")


def test_resume_after_interruption_gives_identical_files(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    clean = make_split("test", 20)
    cfg = CorruptConfig(preset="cifar", corruptions=("gaussian_noise", "contrast"))
    full = tmp_path / "full"
    corrupt_dataset(clean, full, cfg, torch.device("cpu"), progress=False)

    from metabn_bench.data import store

    calls = {"n": 0}
    original = store.SetWriter.write_cell

    def flaky(self, corruption, severity, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, corruption, severity, images)

    part = tmp_path / "part"
    monkeypatch.setattr(store.SetWriter, "write_cell", flaky)
    with pytest.raises(KeyboardInterrupt):
        corrupt_dataset(clean, part, cfg, torch.device("cpu"), progress=False)
    monkeypatch.setattr(store.SetWriter, "write_cell", original)
    assert not list(part.glob("*.tmp")) and not list(part.glob(".*.tmp"))
    corrupt_dataset(clean, part, cfg, torch.device("cpu"), progress=False)
    for name in ("gaussian_noise", "contrast", "labels", "clean"):
        assert (full / f"{name}.npy").read_bytes() == (part / f"{name}.npy").read_bytes()
    assert not (part / ".parts").exists()


def test_a_different_set_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    clean = make_split("test", 10)
    corrupt_dataset(clean, tmp_path, CorruptConfig(preset="cifar", corruptions=("contrast",)),
                    torch.device("cpu"), progress=False)
    with pytest.raises(UserError, match="holds a different corrupted set"):
        corrupt_dataset(clean, tmp_path, CorruptConfig(preset="cifar", seed=1,
                                                       corruptions=("contrast",)),
                        torch.device("cpu"), progress=False)


@pytest.mark.parametrize(("dtype", "shapes"), [
    (np.uint8, [(3, 4, 4, 3), (2, 4, 4, 3), (5, 4, 4, 3)]),
    (np.int64, [(7,)]),
    (np.float32, [(1, 2), (0, 2), (4, 2)]),
])
def test_blocks_are_saved_as_np_save_saves_their_concatenation(
        tmp_path: Path, dtype: type, shapes: list[tuple[int, ...]]) -> None:
    rng = np.random.default_rng(0)
    blocks = [(rng.random(s) * 200).astype(dtype) for s in shapes]
    digest = fsio.save_npy_blocks(tmp_path / "a.npy", blocks)
    fsio.save_npy(tmp_path / "b.npy", np.concatenate(blocks))
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert digest == fsio.sha256_file(tmp_path / "b.npy")
