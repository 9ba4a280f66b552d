"""Seeds derived from names: the same (seed, name, index) always gives the same stream."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any sequence of printable parts, e.g. (0, 'gaussian_noise', 3, 17)."""
    text = "/".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def seed_everything(*parts: object) -> int:
    """Seed torch's global generators (CPU and every CUDA device) from `parts`."""
    seed = derive_seed(*parts)
    torch.manual_seed(seed)
    return seed


def generator(device: torch.device, *parts: object) -> torch.Generator:
    """A torch.Generator on `device` seeded from `parts`."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))
