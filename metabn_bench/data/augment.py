"""Batch-level augmentation on the device: random crop with padding and horizontal flip.

Every function takes a float NCHW batch in [0, 1] and a torch.Generator, so that a run's
augmentation is a function of its seed and nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Per-image random crop of the original size from the zero-padded image.

    Matches torchvision's RandomCrop(size, padding) applied image by image: offsets uniform in
    [0, 2*padding] on each axis, zero fill.
    """
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device)
    oy, ox = oy.to(x.device), ox.to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N,1,H,1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N,1,1,W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols].contiguous(memory_format=_format_of(x))


def random_hflip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Flip each image left-right with probability p."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < p
    flip = flip.to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(3), x)


def crop_flip(x: Tensor, padding: int, hflip: bool, generator: torch.Generator) -> Tensor:
    """The standard CIFAR training augmentation (crop 32 with padding 4, then flip)."""
    x = random_crop(x, padding, generator)
    return random_hflip(x, generator) if hflip else x


def _format_of(x: Tensor) -> torch.memory_format:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format
