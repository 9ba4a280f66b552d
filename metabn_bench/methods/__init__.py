"""Training methods: one file per method, registered by name in METHODS.

Importing this package imports every method module, which registers it.
"""

from __future__ import annotations

import torch

from metabn_bench.config import TrainConfig

# Import order is registration order, the order of every listing and table.
# isort: off
from metabn_bench.methods import vanilla  # noqa: F401
from metabn_bench.methods import cutout  # noqa: F401
from metabn_bench.methods import mixup  # noqa: F401
from metabn_bench.methods import cutmix  # noqa: F401
from metabn_bench.methods import augmix  # noqa: F401
from metabn_bench.methods import selfnorm  # noqa: F401
from metabn_bench.methods import crossnorm  # noqa: F401
from metabn_bench.methods import cnsn  # noqa: F401
from metabn_bench.methods import splitbn  # noqa: F401
from metabn_bench.methods import metabn  # noqa: F401
from metabn_bench.methods import augmix_metabn  # noqa: F401
from metabn_bench.methods import gn  # noqa: F401
from metabn_bench.methods import ibn  # noqa: F401
from metabn_bench.methods import bgn  # noqa: F401
from metabn_bench.methods import iebn  # noqa: F401
from metabn_bench.methods import proxy_norm  # noqa: F401
from metabn_bench.methods import cbn  # noqa: F401
from metabn_bench.methods import mbn  # noqa: F401
from metabn_bench.methods import bn_embeddings  # noqa: F401
# isort: on
from metabn_bench.methods.base import Batch, Method, Prerequisite, StepResult
from metabn_bench.methods.registry import METHODS


def build_method(cfg: TrainConfig, num_classes: int, device: torch.device) -> Method:
    """Instantiate the method named in `cfg` (its hparams are validated here)."""
    cls = METHODS.get(cfg.method)
    return cls(cfg, num_classes, device)


__all__ = ["METHODS", "Batch", "Method", "Prerequisite", "StepResult", "build_method"]
