"""Cross-Iteration Batch Normalization (Yao, Cao, Zheng, Huang & Lin, "Cross-Iteration Batch
Normalization", CVPR 2021).

Every norm layer is CBN (models/cross_iteration_bn.py): in training it normalises with the
statistics of the last `window` iterations, the past ones compensated for the change of the
preceding convolution's weights by the paper's first-order Taylor term (`compensate`; off: the
naive average the paper compares against). As in the paper, a burn-in period trains with
window 1 (plain BN) while the weights still change fast; its length is our choice (`burn_in`,
a share of the training steps).

At our batch sizes (128 images on CIFAR) one batch's statistics are already reliable, so CBN
is expected to train like BN; the method is about small batches (set optim.batch_size).

Evaluation: eval mode normalises with the running statistics, as BN, updated in training from
the pooled window statistics. Under `bn` the running statistics are replaced by the test
batch's (as for BN); under `tent` the layers use test-batch statistics with window 1: the
cross-iteration pooling is switched off at evaluation (`prepare_eval`), since Tent's updates do
not change the convolutions CBN compensates for and pooling would mix different test batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method, StepResult
from metabn_bench.methods.registry import METHODS
from metabn_bench.models import Classifier
from metabn_bench.models.cross_iteration_bn import PastStatistics, cbn_layers, link_producers
from metabn_bench.models.norms import NormFactory, make_norm


@dataclass(frozen=True)
class CBNHparams:
    """CBN's options."""

    # Iterations pooled, the current one included (our choice: 4, i.e. 3 previous iterations,
    # as in the authors' released detection configuration "buffer3").
    window: int = 4
    compensate: bool = True  # the Taylor compensation; False: the naive cross-iteration average
    # Share of the training steps trained as plain BN first (our choice; the paper's burn-in
    # is a number of epochs of its ImageNet / COCO schedules).
    burn_in: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise UserError(f"hparams.window must be an integer >= 1, got {self.window!r}")
        if not isinstance(self.compensate, bool):
            raise UserError(f"hparams.compensate must be true or false, got {self.compensate!r}")
        if not 0.0 <= self.burn_in <= 1.0:
            raise UserError(f"hparams.burn_in must be in [0, 1], got {self.burn_in!r}")


@METHODS.register("cbn")
class CrossIterationBNMethod(Method[CBNHparams]):
    """CBN: BN statistics over the last k iterations, Taylor-compensated (Yao et al., CVPR 2021)."""

    Hparams = CBNHparams
    description = "CBN: BN statistics of the last k iterations, Taylor-compensated (Yao et al., CVPR 2021)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: nn.Module | None = None  # the model being trained (its layers' memory)

    def norm_layer(self) -> NormFactory:
        return make_norm("cbn", window=self.hp.window, compensate=self.hp.compensate)

    def build_model(self) -> Classifier:
        model = super().build_model()
        link_producers(model)
        return model

    def prepare_training(self, model: nn.Module, prerequisite: Path | None) -> None:
        self._model = model

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        active = batch.progress >= self.hp.burn_in
        for layer in cbn_layers(model):
            layer.cross_iteration = active
        return super().training_step(model, batch)

    def state_dict(self) -> dict[str, Any]:
        """Each layer's window of past statistics, so a resumed run continues with it."""
        if self._model is None:
            return {}
        return {"past": [[p.as_dict() for p in layer.past] for layer in cbn_layers(self._model)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._model is None or "past" not in state:
            return
        for layer, past in zip(cbn_layers(self._model), state["past"], strict=True):
            layer.past = [PastStatistics(**p) for p in past]

    def prepare_eval(self, model: nn.Module) -> None:
        for layer in cbn_layers(model):
            layer.cross_iteration = False
            layer.past.clear()
        model.eval()
