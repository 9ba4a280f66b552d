"""Dataset SPECs: how a name on the command line becomes train and test ArraySets.

SPECs: `synthetic` (embedded), `cifar10`, `cifar100` (torchvision, downloaded to data_root when
missing), `tinyimagenet` (tiny-imagenet-200 under data_root), `npy:DIR` and `folder:DIR`.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metabn_bench.data import synthetic
from metabn_bench.data.arrays import ArraySet, balanced_subset, validate_arrays
from metabn_bench.errors import UserError
from metabn_bench.registry import Registry

SPLITS = ("train", "test")
OFFLINE_HINT = (
    "use --dataset synthetic, npy:DIR (images.npy + labels.npy per split) or folder:DIR "
    "(an ImageFolder tree with train/ and test/), or place the files in --data-root"
)

Loader = Callable[[str, str, Path, int], ArraySet]  # (argument, split, data_root, n) -> ArraySet


@dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset SPEC: its loader and a line for `list datasets`."""

    loader: Loader
    usage: str
    needs_arg: bool = False


DATASETS: Registry[DatasetKind] = Registry("dataset")


def parse_spec(spec: str) -> tuple[str, str]:
    """'npy:/some/dir' -> ('npy', '/some/dir'); 'cifar10' -> ('cifar10', '')."""
    kind, _, arg = spec.partition(":")
    entry = DATASETS.get(kind)
    if entry.needs_arg and not arg:
        raise UserError(f"dataset '{kind}' needs a directory: {entry.usage}")
    if arg and not entry.needs_arg:
        raise UserError(f"dataset '{kind}' takes no argument: {entry.usage}")
    return kind, arg


def load_split(spec: str, split: str, data_root: str | Path = "data", n: int = 0,
               label: str = "") -> ArraySet:
    """Load `split` of dataset SPEC; n > 0 keeps a class-balanced subset of n images."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"the number of images --n is {n!r}; valid: an integer >= 0 (0 = all)")
    kind, arg = parse_spec(spec)
    data = DATASETS.get(kind).loader(arg, split, Path(data_root), n)
    if len(data) == 0:
        raise UserError(f"dataset '{spec}' has no {split} images; valid: a data set with at least "
                        "one image")
    data = data.take(n).class_mixed()
    present = int(np.unique(data.labels).size)
    if n > 0 and present < len(data.classes):
        # fewer images than classes: say so rather than drop classes silently
        warnings.warn(f"a subset of {n} images (--n or data.train_size) keeps {present} of "
                      f"the {len(data.classes)} classes of '{spec}' ({split}); use 0 (all) or "
                      f"at least {len(data.classes)} to have every class", stacklevel=2)
    if label:
        data = ArraySet(data.images, data.labels, data.classes, label, data.notes)
    return data


# ---------------------------------------------------------------------------------------------
# synthetic


def _load_synthetic(arg: str, split: str, root: Path, n: int) -> ArraySet:
    size = synthetic.SIZES[split]
    # The set is prefix-stable and balanced in blocks of 10: a subset is just a shorter prefix.
    return synthetic.make_split(split, min(size, n) if n > 0 else size)


DATASETS.add("synthetic", DatasetKind(_load_synthetic, "synthetic (embedded, no download)"))


# ---------------------------------------------------------------------------------------------
# npy:DIR


def read_npy(path: Path, what: str) -> np.ndarray:
    """np.load with a one-line UserError for a missing, truncated or malformed file."""
    if not path.is_file():
        raise UserError(f"{what}: file '{path}' does not exist")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise UserError(f"{what}: '{path}' is not a valid .npy file (truncated or pickled?): "
                        f"{str(exc).splitlines()[0]}") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{what}: cannot read '{path}': {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{what}: '{path}' holds an archive, not a single array")
    return arr


def _sidecar(directory: Path) -> dict[str, object]:
    """Optional dataset.json next to the arrays: {"name": ..., "classes": [...]}."""
    path = directory / "dataset.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"'{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"'{path}' must hold a JSON object with 'name' and 'classes'")
    return data


def _load_npy_dir(arg: str, split: str, root: Path, n: int) -> ArraySet:
    base = Path(arg)
    if not base.is_dir():
        raise UserError(f"dataset directory '{base}' does not exist")
    directory = base / split if (base / split).is_dir() else base
    if not (directory / "images.npy").exists():
        raise UserError(
            f"npy:{base}: expected images.npy and labels.npy in {base}/{split}/ or {base}/"
        )
    meta = {**_sidecar(base), **_sidecar(directory)}
    where = f"npy:{directory}"
    images = read_npy(directory / "images.npy", where)
    labels = read_npy(directory / "labels.npy", where)
    declared = meta.get("classes")
    validate_arrays(images, labels, where, len(declared) if isinstance(declared, list) else None)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise UserError(f"{where}: labels.npy holds no labels; valid: at least one image")
    classes = declared or [str(c) for c in range(_class_count(base, split, labels, where))]
    name = str(meta.get("name") or f"npy:{base.resolve()}")
    return ArraySet(np.asarray(images), labels, tuple(str(c) for c in classes), name)


def _class_count(base: Path, split: str, labels: np.ndarray, where: str) -> int:
    """Classes of an npy:DIR set without dataset.json: 0..max label over both splits.

    A label that no other image shares beyond the others' range (a 10 among labels 0..8) is
    refused rather than silently adding classes: declare them in dataset.json instead.
    """
    seen = set(np.unique(labels).tolist())
    for other in SPLITS:
        path = base / other / "labels.npy"
        if other != split and path.is_file():
            with contextlib.suppress(UserError):
                seen |= set(np.unique(np.asarray(read_npy(path, where))).tolist())
    count = int(max(seen)) + 1
    empty = sorted(set(range(count)) - seen)
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (" ..." if len(empty) > 5 else "")
        raise UserError(f"{where}: labels go up to {count - 1} but classes {shown} have no image "
                        "in any split; valid: labels 0..K-1 with every class present, or a "
                        "dataset.json next to the arrays listing the 'classes'")
    return count


DATASETS.add("npy", DatasetKind(
    _load_npy_dir, "npy:DIR with images.npy (N,H,W,3 uint8) + labels.npy, or DIR/train, DIR/test",
    needs_arg=True))


# ---------------------------------------------------------------------------------------------
# folder:DIR


_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def decode_images(files: list[Path], where: str) -> np.ndarray:
    """Decode image files to one (N, H, W, 3) uint8 array (all must share one size)."""
    from PIL import Image, UnidentifiedImageError

    def load(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"{where}: cannot decode image '{path}': {exc}") from None

    with ThreadPoolExecutor(max_workers=8) as pool:
        arrays = list(pool.map(load, files))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise UserError(f"{where}: images have different sizes {sorted(shapes)[:3]}; resize them first")
    return np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)


def _load_folder(arg: str, split: str, root: Path, n: int) -> ArraySet:
    base = Path(arg)
    directory = base / split
    if not directory.is_dir():
        raise UserError(f"folder:{base}: expected an ImageFolder tree with {directory}/<class>/*.png")
    classes = sorted(d.name for d in directory.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"folder:{base}: no class folders in {directory}")
    files: list[Path] = []
    labels: list[int] = []
    for idx, cls in enumerate(classes):
        found = sorted(p for p in (directory / cls).rglob("*") if p.suffix.lower() in _IMAGE_EXT)
        files += found
        labels += [idx] * len(found)
    if not files:
        raise UserError(f"folder:{base}: no images found under {directory}")
    lab = np.asarray(labels, dtype=np.int64)
    if n > 0:  # decode only the subset that will be kept
        keep = balanced_subset(lab, n)
        files, lab = [files[i] for i in keep], lab[keep]
    meta = _sidecar(base)
    name = str(meta.get("name") or f"folder:{base.resolve()}")
    return ArraySet(decode_images(files, f"folder:{base}"), lab, tuple(classes), name)


DATASETS.add("folder", DatasetKind(
    _load_folder, "folder:DIR, an ImageFolder tree DIR/train/<class>/* and DIR/test/<class>/*",
    needs_arg=True))


# ---------------------------------------------------------------------------------------------
# torchvision CIFAR


def _load_cifar(which: str) -> Loader:
    def loader(arg: str, split: str, root: Path, n: int) -> ArraySet:
        from torchvision import datasets

        cls = datasets.CIFAR10 if which == "cifar10" else datasets.CIFAR100
        name = "CIFAR-10" if which == "cifar10" else "CIFAR-100"
        try:
            ds = cls(str(root), train=split == "train", download=True)
        except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError offline
            raise UserError(
                f"cannot load {name} from '{root}' (download failed: {type(exc).__name__}); "
                + OFFLINE_HINT
            ) from None
        images = np.asarray(ds.data, dtype=np.uint8)
        labels = np.asarray(ds.targets, dtype=np.int64)
        return ArraySet(images, labels, tuple(ds.classes), f"{name} (torchvision)")

    return loader


DATASETS.add("cifar10", DatasetKind(_load_cifar("cifar10"), "cifar10 (torchvision; --data-root)"))
DATASETS.add("cifar100", DatasetKind(_load_cifar("cifar100"), "cifar100 (torchvision; --data-root)"))


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _load_tiny(arg: str, split: str, root: Path, n: int) -> ArraySet:
    base = root / "tiny-imagenet-200"
    if not base.is_dir():
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(TINY_URL, str(root))
        except Exception as exc:
            raise UserError(
                f"cannot load Tiny-ImageNet from '{base}' (download failed: {type(exc).__name__}); "
                + OFFLINE_HINT
            ) from None
    wnids = (base / "wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        files = sorted((base / "train").glob("*/images/*.JPEG"))
        labels = [index[p.parent.parent.name] for p in files]
    else:  # the public validation split is the test split of every Tiny-ImageNet-C paper
        rows = [line.split("\t") for line in (base / "val" / "val_annotations.txt").read_text().splitlines()]
        files = [base / "val" / "images" / r[0] for r in rows]
        labels = [index[r[1]] for r in rows]
    lab = np.asarray(labels, dtype=np.int64)
    if n > 0:
        keep = balanced_subset(lab, n)
        files, lab = [files[i] for i in keep], lab[keep]
    images = decode_images(files, "tinyimagenet")
    return ArraySet(images, lab, tuple(wnids), "Tiny-ImageNet (tiny-imagenet-200)")


DATASETS.add("tinyimagenet", DatasetKind(_load_tiny, "tinyimagenet (tiny-imagenet-200 under --data-root)"))
