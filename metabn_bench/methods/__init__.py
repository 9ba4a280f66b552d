"""Training methods: one file per method, registered by name in METHODS.

Importing this package imports every method module, which registers it.
"""

from __future__ import annotations

import torch

from metabn_bench.config import TrainConfig
from metabn_bench.methods import (
    metabn,  # noqa: F401  (registration)
    vanilla,  # noqa: F401  (registration)
)
from metabn_bench.methods.base import Batch, Method, StepResult
from metabn_bench.methods.registry import METHODS


def build_method(cfg: TrainConfig, num_classes: int, device: torch.device) -> Method:
    """Instantiate the method named in `cfg` (its hparams are validated here)."""
    cls = METHODS.get(cfg.method)
    return cls(cfg, num_classes, device)


__all__ = ["METHODS", "Batch", "Method", "StepResult", "build_method"]
