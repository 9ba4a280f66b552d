"""Per-image random streams for batched corruption ops.

Every image's randomness comes from its own generator seeded by (seed, corruption, severity,
index), so an image's corrupted bytes do not depend on the batch it is in, the batch size, the
device count or on resuming. Draws happen on the CPU (small arrays) and move to the device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metabn_bench.seeding import derive_seed


class ImageRandom:
    """Random draws for a batch of images, each from its own generator."""

    def __init__(self, seed: int, corruption: str, severity: int, indices: range | list[int],
                 device: torch.device) -> None:
        base = derive_seed(seed, corruption, severity)
        self.seeds = [(base + int(i)) % (1 << 63) for i in indices]
        self._generators: list[torch.Generator] | None = None
        self.device = device

    @property
    def generators(self) -> list[torch.Generator]:
        """One seeded generator per image, made on first use (deterministic ops never draw)."""
        if self._generators is None:
            self._generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        return self._generators

    def __len__(self) -> int:
        return len(self.seeds)

    def _stack(self, draws: list[Tensor]) -> Tensor:
        return torch.stack(draws).to(self.device, non_blocking=True)

    def uniform(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """(B, *shape) uniform in [0, 1)."""
        return self._stack([torch.rand(shape, generator=g, dtype=dtype) for g in self.generators])

    def normal(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """(B, *shape) standard normal."""
        return self._stack([torch.randn(shape, generator=g, dtype=dtype) for g in self.generators])

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        """(B, *shape) integers in [low, high)."""
        return self._stack([torch.randint(low, high, shape, generator=g) for g in self.generators])

    def poisson(self, rates: Tensor) -> Tensor:
        """Poisson draws with per-element rates (B, ...), one stream per image.

        NumPy's sampler (PCG64 seeded with the image's seed) is about 10x faster than
        torch.poisson on the CPU; it is a separate stream from the torch draws of the image.
        """
        cpu = rates.detach().to("cpu", torch.float64).numpy()
        draws = [np.random.Generator(np.random.PCG64(s)).poisson(r)
                 for r, s in zip(cpu, self.seeds)]
        return torch.from_numpy(np.stack(draws)).to(self.device, non_blocking=True)
