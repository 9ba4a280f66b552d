"""Data set SPECs, the synthetic set, and one-line errors for bad data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metabn_bench.data.arrays import balanced_subset
from metabn_bench.data.specs import load_split, parse_spec
from metabn_bench.data.synthetic import CLASSES, make_split
from metabn_bench.errors import UserError


def test_synthetic_is_deterministic_prefix_stable_and_balanced() -> None:
    a = make_split("train", 300)
    b = make_split("train", 120)
    assert a.images.dtype == np.uint8 and a.images.shape == (300, 32, 32, 3)
    np.testing.assert_array_equal(a.images[:120], b.images)
    np.testing.assert_array_equal(np.bincount(a.labels), [30] * 10)
    assert a.classes == CLASSES
    test = make_split("test", 50)
    assert not np.array_equal(test.images, a.images[:50])  # splits are different draws


def test_synthetic_images_vary_within_a_class() -> None:
    data = make_split("train", 200)
    same = data.images[data.labels == 0].astype(float)
    assert same.std(axis=0).mean() > 20  # pose, colour and background really vary


def test_balanced_subset_takes_round_robin_in_order() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])  # sorted by class, as in an ImageFolder
    assert balanced_subset(labels, 3).tolist() == [0, 3, 6]
    assert balanced_subset(labels, 5).tolist() == [0, 1, 3, 4, 6]


def test_class_sorted_sources_are_mixed_for_test_batches(tmp_path: Path) -> None:
    # A class-sorted test split (a decoded JPEG copy, an ImageFolder tree) would give test
    # batches of one class, which breaks BN adaptation and Tent: it is put in a fixed order.
    labels = np.repeat(np.arange(4), 25)
    images = np.zeros((100, 8, 8, 3), np.uint8)
    images[..., 0] = np.arange(100, dtype=np.uint8)[:, None, None]  # image i remembers i
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    for n in (0, 40):
        a = load_split(f"npy:{tmp_path}", "test", n=n)
        b = load_split(f"npy:{tmp_path}", "test", n=n)
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.images, b.images)
        assert np.bincount(a.labels[:20], minlength=4).max() < 20  # batches mix classes
        assert np.array_equal(labels[a.images[:, 0, 0, 0]], a.labels)  # pairs kept
        assert "order" in a.notes
    shuffled = load_split("synthetic", "test", n=50)  # already mixed: order untouched
    assert "order" not in shuffled.notes


def test_npy_dir_with_splits(npy_dataset: Path) -> None:
    train = load_split(f"npy:{npy_dataset}", "train")
    test = load_split(f"npy:{npy_dataset}", "test", n=20)
    assert len(train) == 200 and len(test) == 20
    assert test.source.startswith("npy:")


def test_npy_sidecar_label_and_flat_layout(tmp_path: Path) -> None:
    data = make_split("test", 30)
    np.save(tmp_path / "images.npy", data.images)
    np.save(tmp_path / "labels.npy", data.labels)
    (tmp_path / "dataset.json").write_text('{"name": "CIFAR-10, JPEG copy"}')
    loaded = load_split(f"npy:{tmp_path}", "test")
    assert loaded.source == "CIFAR-10, JPEG copy" and len(loaded) == 30


def _npy_dir(tmp_path: Path, images: object, labels: object) -> str:
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    return f"npy:{tmp_path}"


@pytest.mark.parametrize(("images", "labels", "message"), [
    (np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, np.int64), "images must be uint8"),
    (np.zeros((4, 8, 8), np.uint8), np.zeros(4, np.int64), r"shape \(N, H, W, 3\)"),
    (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, np.int64), "3 labels do not match 4 images"),
    (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.float32), "labels must be integers"),
    (np.zeros((4, 8, 8, 3), np.uint8), -np.ones(4, np.int64), "labels must be >= 0"),
])
def test_malformed_arrays_are_named(tmp_path: Path, images: np.ndarray, labels: np.ndarray,
                                    message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_split(_npy_dir(tmp_path, images, labels), "test")


def test_truncated_npy_is_a_user_error(tmp_path: Path) -> None:
    spec = _npy_dir(tmp_path, np.zeros((50, 8, 8, 3), np.uint8), np.zeros(50, np.int64))
    raw = (tmp_path / "images.npy").read_bytes()
    (tmp_path / "images.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="not a valid .npy file"):
        load_split(spec, "test")


def test_missing_directory_and_unknown_kind() -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_split("npy:/no/such/dir", "test")
    with pytest.raises(UserError, match="unknown dataset 'imagenet21k'; valid: "):
        parse_spec("imagenet21k")
    with pytest.raises(UserError, match="needs a directory"):
        parse_spec("npy")


def test_folder_spec_reads_an_imagefolder_tree(tmp_path: Path) -> None:
    data = make_split("test", 20)
    for split in ("train", "test"):
        for i, (img, label) in enumerate(zip(data.images, data.labels)):
            folder = tmp_path / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    loaded = load_split(f"folder:{tmp_path}", "test")
    assert len(loaded) == 20 and loaded.classes == tuple(sorted(CLASSES))
    # PNG is lossless: every image comes back exactly (order is class-sorted).
    originals = {img.tobytes() for img in data.images}
    assert {img.tobytes() for img in loaded.images} == originals


def test_cifar_offline_names_the_alternatives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network")

    monkeypatch.setattr(datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match=r"cannot load CIFAR-10 .* use --dataset synthetic, npy:DIR"):
        load_split("cifar10", "test", tmp_path)
