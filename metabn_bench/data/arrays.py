"""The in-memory form of every data set split: uint8 NHWC images, int64 labels, provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from metabn_bench.errors import UserError


@dataclass(frozen=True)
class ArraySet:
    """One split of a data set.

    images: (N, H, W, 3) uint8; labels: (N,) int64 in [0, len(classes)); source: the provenance
    label written next to every number computed from it.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str
    notes: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_arrays(self.images, self.labels, self.source, num_classes=len(self.classes))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def take(self, n: int) -> ArraySet:
        """A class-balanced, deterministic subset of n images (all if n <= 0 or n >= N)."""
        if n <= 0 or n >= len(self):
            return self
        idx = balanced_subset(self.labels, n)
        notes = {**self.notes, "subset": f"{n} of {len(self)} (first n/k of each class)"}
        return ArraySet(self.images[idx], self.labels[idx], self.classes, self.source, notes)

    def class_mixed(self) -> ArraySet:
        """This split in a fixed random order if it is sorted by class, else unchanged.

        Sources stored class by class (an ImageFolder tree, a decoded JPEG copy) would give
        test batches of one or two classes; BN adaptation and Tent estimate statistics from
        the test batch and fail on such batches (measured: BN adaptation on class-sorted
        batches of 200 CIFAR-10 images, 68% error against 32% on mixed ones). The released
        CIFAR-10 test set is in random order; a fixed permutation (seed 0) restores that.
        """
        labels = self.labels
        if len(self) < 2 or np.unique(labels).size < 2 or np.any(np.diff(labels) < 0):
            return self
        perm = np.random.default_rng(0).permutation(len(self))
        notes = {**self.notes, "order": "class-sorted source, fixed random permutation (seed 0)"}
        return ArraySet(self.images[perm], labels[perm], self.classes, self.source, notes)


def validate_arrays(
    images: np.ndarray, labels: np.ndarray, where: str, num_classes: int | None = None
) -> None:
    """Raise a UserError unless images are (N,H,W,3) uint8 and labels (N,) integers in range."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        dtype = getattr(images, "dtype", type(images).__name__)
        raise UserError(f"{where}: images must be uint8, got {dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"{where}: images must have shape (N, H, W, 3), got {tuple(images.shape)}")
    if not isinstance(labels, np.ndarray) or labels.ndim != 1:
        raise UserError(f"{where}: labels must be a 1-D array, got shape {getattr(labels, 'shape', '?')}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{where}: labels must be integers, got {labels.dtype}")
    if labels.shape[0] != images.shape[0]:
        raise UserError(
            f"{where}: {labels.shape[0]} labels do not match {images.shape[0]} images"
        )
    if labels.size and labels.min() < 0:
        raise UserError(f"{where}: labels must be >= 0, found {int(labels.min())}")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise UserError(
            f"{where}: label {int(labels.max())} is out of range for {num_classes} classes"
        )


def balanced_subset(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of n images taken round-robin over classes in data set order, sorted ascending.

    Deterministic and class-balanced whatever the data set's order (shuffled like CIFAR, or
    sorted by class like an ImageFolder tree).
    """
    rank = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(where.size)
    order = np.lexsort((labels, rank))  # rank-0 image of every class first, then rank 1, ...
    return np.sort(order[:n])
