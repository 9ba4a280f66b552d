"""What `evaluate` evaluates: a model on a device, how images reach it, and who it is.

Two kinds of source give a `Subject`: a finished run directory of this toolkit (`RunSource`,
rebuilt by evaluation/trained.py) and a model made elsewhere (`ExternalModel`, in
evaluation/external.py). Protocols, streams and the rows treat both alike; only the identity
fields of the rows and the directory the rows go to differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from metabn_bench import runs
from metabn_bench.data.specs import load_split
from metabn_bench.data.store import CorruptedSet
from metabn_bench.errors import UserError
from metabn_bench.evaluation.trained import load_trained


@dataclass
class Subject:
    """A model ready for test-time protocols.

    `normalize` maps a batch of [0, 1] NCHW images to the model's input; `reset` returns any
    test-time state of the training method (not of the protocol) to its start; `identity` is
    merged into every result row (run id, method, arch, dataset, seed and, for a model made
    elsewhere, its file and sha256).
    """

    model: nn.Module
    device: torch.device
    fmt: torch.memory_format
    normalize: Callable[[Tensor], Tensor]
    reset: Callable[[], None]
    identity: dict[str, Any]
    amp: bool = False
    # Why a batch-adaptive protocol cannot act on this model whatever its layers (a compiled
    # TorchScript module has no nn.BatchNorm2d to hook); None when nothing stands in the way.
    adaptation_blocked: str | None = None
    # A run of this toolkit: its directory and config (Meta-BN's static control stores its
    # corrections there); None for a model made elsewhere.
    run_dir: Path | None = None
    config: Any = None


class Source(Protocol):
    """Where a Subject comes from; `evaluate` needs nothing else from it."""

    @property
    def out_dir(self) -> Path:
        """The directory that receives eval.jsonl and per_image.npz (and is locked meanwhile)."""
        ...

    def check(self, device: torch.device) -> None:
        """One-line UserErrors for anything wrong, before the directory is locked."""
        ...

    def load(self, device: torch.device) -> Subject:
        """A fresh Subject (protocols change the model, so each protocol gets its own)."""
        ...

    def clean_images(self, cset: CorruptedSet) -> np.ndarray:
        """The clean images of the set's cell 'clean'."""
        ...

    def num_classes(self, device: torch.device, cset: CorruptedSet) -> int:
        """How many classes the model tells apart."""
        ...

    def label(self) -> str:
        """How progress bars name the model."""
        ...


class RunSource:
    """A finished run directory of this toolkit."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    @property
    def out_dir(self) -> Path:
        return self.run_dir

    def check(self, device: torch.device) -> None:
        runs.require_finished(self.run_dir, "; re-run its train command to resume it")
        runs.load_config(self.run_dir)
        runs.load_weights(self.run_dir)  # a missing, truncated or unsafe model.pt: before the lock

    def load(self, device: torch.device) -> Subject:
        run = load_trained(self.run_dir, device)
        cfg = run.config
        identity = {"run_id": self.run_dir.name, **method_fields(cfg), "arch": cfg.arch,
                    "dataset": cfg.data.dataset, "seed": cfg.seed}
        return Subject(run.model, device, run.fmt, run.method.normalize, run.method.reset,
                       identity, amp=cfg.amp, run_dir=self.run_dir, config=cfg)

    def clean_images(self, cset: CorruptedSet) -> np.ndarray:
        return clean_images(runs.load_config(self.run_dir), cset)

    def num_classes(self, device: torch.device, cset: CorruptedSet) -> int:
        return len(runs.class_names(self.run_dir))

    def label(self) -> str:
        return runs.load_config(self.run_dir).method


def method_fields(cfg: Any) -> dict[str, Any]:
    """A row's `method`, and `trained_on` where the run saw in training what results must
    declare (Method.trained_on): the method is then named `<method>[<trained_on>]`."""
    from metabn_bench.methods import METHODS

    seen = METHODS.get(cfg.method).trained_on(cfg)
    if seen is None:
        return {"method": cfg.method}
    return {"method": f"{cfg.method}[{seen.replace(' ', '_')}]", "trained_on": seen}


def clean_images(run_cfg: Any, cset: CorruptedSet) -> np.ndarray:
    """The set's clean images (for a released set without them: the run's first N test images)."""
    clean = cset.clean()
    if clean is not None:
        return clean
    # A released set has no clean copy: use the first N test images of the run's data set.
    data = load_split(run_cfg.data.dataset, "test", run_cfg.data.data_root, 0, run_cfg.data.label)
    if len(data) < cset.n:
        raise UserError(f"the corrupted set has {cset.n} images but the test split only {len(data)}")
    if not np.array_equal(data.labels[:cset.n], cset.labels):
        raise UserError("the corrupted set's labels do not match the run's test split")
    return data.images[:cset.n]
