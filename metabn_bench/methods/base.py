"""The Method contract. The base class is vanilla training; a method overrides what it changes.

- `Hparams`: a frozen dataclass of the method's defaults (validated `hparams` config keys).
- `norm_layer()` / `block_unit()` / `build_model()`: what the architecture is built with.
- `prerequisite(cfg)`: a run the method needs finished first (post_hoc Meta-BN: its backbone);
  `train` and the suite train it, then hand its directory to `prepare_training`.
- `prepare_training(model, prerequisite)`: set-up before the optimiser exists.
- `batch_transform(batch)`: batch-level augmentation on the device (images in [0, 1]).
- `training_step(model, batch)`: the loss (and logits, for the training error).
- `prepare_eval(model)` and `reset()`: anything the method does at test time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench.config import TrainConfig, from_dict, to_dict
from metabn_bench.models import Classifier, build_model
from metabn_bench.models.norms import NormFactory, UnitFactory, make_norm


@dataclass(frozen=True)
class NoHparams:
    """A method without options of its own."""


@dataclass(frozen=True)
class Prerequisite:
    """A run a method needs finished before it trains: its config, and the name of its
    directory inside the method's own run directory (so it is resumed and skipped with it)."""

    config: TrainConfig
    name: str


@dataclass
class Batch:
    """A training batch on the device: images in [0, 1] NCHW after crop and flip, labels.

    Methods may attach what they need in `extra` (mixed targets, extra views, ...). `lr` is the
    optimiser's learning rate at this step; for methods that take an inner gradient step of
    their own, the training step also sets `loss_scale` (the GradScaler's scale the outer loss
    is multiplied by, 1 without one: scale the inner loss by it, then unscale the gradients)
    and `average_over_ranks` (the mean of a list of tensors over data-parallel ranks: apply it
    to the inner gradients so that they are the global batch's). `progress` is the share of the
    run's steps done before this one, in [0, 1] (for methods with a warm-up phase, such as
    CBN's burn-in; 1.0 where a caller has no schedule: no warm-up).
    """

    x: Tensor
    y: Tensor
    extra: dict[str, Any] = field(default_factory=dict)
    lr: float = 0.0
    loss_scale: float = 1.0
    average_over_ranks: Callable[[list[Tensor]], list[Tensor]] = field(default=lambda ts: ts)
    progress: float = 1.0


@dataclass
class StepResult:
    """What one training step returns: the loss to minimise, optional logits, scalar logs."""

    loss: Tensor
    logits: Tensor | None = None
    logs: dict[str, float] = field(default_factory=dict)


H = TypeVar("H")  # a method's Hparams dataclass


class Method(Generic[H]):
    """Vanilla empirical risk minimisation with the common recipe: cross-entropy on crop+flip.

    Generic in the type of its options: a method declares `class M(Method[MHparams])` with
    `Hparams = MHparams`, and `self.hp` has that type.
    """

    Hparams: ClassVar[type[Any]] = NoHparams
    description: ClassVar[str] = "cross-entropy with crop + flip (the common recipe)"

    def __init__(self, cfg: TrainConfig, num_classes: int, device: torch.device) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.device = device
        self.hp: H = from_dict(self.Hparams, cfg.hparams, "hparams")
        self.mean = torch.tensor(cfg.data.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg.data.std, device=device).view(1, -1, 1, 1)

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The method's defaults as a plain dict."""
        return to_dict(cls.Hparams())

    def resolved_hparams(self) -> dict[str, Any]:
        """Every option with its value in this run (written into config.json)."""
        return to_dict(self.hp) if dataclasses.is_dataclass(self.hp) else {}

    # -- model ---------------------------------------------------------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """Map [0, 1] images to the network's input scale (mean/std of the config)."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def norm_layer(self) -> NormFactory:
        """The norm layer the architecture is built with (BatchNorm2d here)."""
        return make_norm("bn")

    def block_unit(self) -> tuple[UnitFactory | None, str]:
        """An extra per-residual-block module and its position ('pre' or 'post'), or None."""
        return None, "post"

    def build_model(self) -> Classifier:
        """The configured architecture with this method's norm layer and unit."""
        unit, position = self.block_unit()
        return build_model(self.cfg.arch, self.num_classes, self.norm_layer(), unit, position)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Parameter groups for the optimiser (all parameters, weight decay on all, as AugMix)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def trained_on(cls, cfg: TrainConfig) -> str | None:
        """What a run of `cfg` saw in training that results must declare (for example
        'validation corruptions'), or None; evaluation rows then carry it in `trained_on`
        and name the method `<method>[<trained_on>]`, so it never pools with the default."""
        return None

    @classmethod
    def prerequisite(cls, cfg: TrainConfig) -> Prerequisite | None:
        """The run this method needs finished before it trains (none for vanilla).

        A method never runs the training loop itself: `train` trains the prerequisite first
        and passes its finished directory to `prepare_training`.
        """
        return None

    def prepare_training(self, model: nn.Module, prerequisite: Path | None) -> None:
        """Set the model up before the optimiser is built (nothing for vanilla)."""

    def batch_transform(self, batch: Batch) -> Batch:
        """Batch-level augmentation after crop and flip (none for vanilla)."""
        return batch

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        """Cross-entropy on the (augmented) batch."""
        logits = model(self.normalize(batch.x))
        return StepResult(F.cross_entropy(logits, batch.y), logits)

    def state_dict(self) -> dict[str, Any]:
        """Method state to checkpoint beyond the model (none for vanilla)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""

    # -- evaluation ----------------------------------------------------------------------------
    def prepare_eval(self, model: nn.Module) -> None:
        """Put the model in its test-time configuration."""
        model.eval()

    def reset(self) -> None:
        """Forget any test-time state (called before each evaluation cell)."""
