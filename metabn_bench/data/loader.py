"""A loader that keeps uint8 images on the device and yields whole batches.

No worker processes, no per-image Python: the data set is one uint8 tensor on the device
(CIFAR-10's 50,000 training images are 150 MB), an epoch is a permutation drawn from a
generator seeded by (seed, epoch), and augmentation runs on whole batches (augment.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from metabn_bench.seeding import derive_seed


class DeviceLoader:
    """Batches of (uint8 NHWC images, int64 labels) from arrays held on `device`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int,
                 device: torch.device, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 0) -> None:
        # A private, writable copy: the source may be a read-only memory map.
        self.images = torch.from_numpy(np.array(images, copy=True)).to(device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.drop_last = drop_last and len(self.labels) >= batch_size
        self.seed = seed

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of one epoch; the order depends only on (seed, epoch)."""
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
            order = torch.randperm(n, generator=gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


def to_float(images: Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1] (optionally channels_last in memory)."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=memory_format)


def batches(images: np.ndarray, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """Consecutive uint8 batches of a (possibly memory-mapped) array, moved to `device`."""
    for start in range(0, images.shape[0], batch_size):
        block = np.array(images[start:start + batch_size])  # a writable copy (may be a memmap)
        yield torch.from_numpy(block).to(device, non_blocking=True)
