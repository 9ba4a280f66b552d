"""Memorized Batch Normalization with the Double-Forward scheme (Guo, Wu, Deng, Chen & Tan,
"Double Forward Propagation for Memorized Batch Normalization", AAAI 2018).

Every norm layer is MBN (models/memorized_bn.py): in training it normalises with the weighted
statistics of the current and the `memory` - 1 previous batches. Double-Forward: after the SGD
step on a batch, the batch is forwarded again under the updated weights (no gradients) and its
memorised statistics are replaced by the re-measured ones. Here that second forward runs at the
start of the next training step, before the next batch's forward: the weights are then exactly
those after the update, so it is the same computation without a hook after the optimiser step.
The last batch of training is not forwarded twice (no step follows it).

What it means at evaluation: eval mode normalises with the memorised statistics of the last
batches of training (the rule of training, not a moving average; the paper's consistency
between training and inference). Under `bn` they are replaced by the test batch's statistics;
under `tent` the layers use test-batch statistics without memory (`prepare_eval` switches the
memory off, so one cell's batches do not pool into each other).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method, StepResult
from metabn_bench.methods.registry import METHODS
from metabn_bench.models.memorized_bn import WEIGHTINGS, mbn_layers
from metabn_bench.models.norms import NormFactory, make_norm


@dataclass(frozen=True)
class MBNHparams:
    """MBN's options."""

    memory: int = 4  # batches whose statistics are combined, the current one included (our choice)
    weighting: str = "uniform"  # the weights eta: uniform | linear (newest heaviest); our choice
    double_forward: bool = True  # re-measure each batch's statistics after its update

    def __post_init__(self) -> None:
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory < 1:
            raise UserError(f"hparams.memory must be an integer >= 1, got {self.memory!r}")
        if self.weighting not in WEIGHTINGS:
            raise UserError(f"hparams.weighting must be one of {', '.join(WEIGHTINGS)}; "
                            f"got '{self.weighting}'")
        if not isinstance(self.double_forward, bool):
            raise UserError("hparams.double_forward must be true or false, "
                            f"got {self.double_forward!r}")


@METHODS.register("mbn")
class MemorizedBNMethod(Method[MBNHparams]):
    """MBN: BN statistics memorised over recent batches, Double-Forward (Guo et al., AAAI 2018)."""

    Hparams = MBNHparams
    description = "MBN: BN statistics memorised over recent batches, Double-Forward (Guo et al., AAAI 2018)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: nn.Module | None = None
        self._pending: Tensor | None = None  # the last batch, to forward again after its update

    def norm_layer(self) -> NormFactory:
        return make_norm("mbn", memory=self.hp.memory, weighting=self.hp.weighting)

    def prepare_training(self, model: nn.Module, prerequisite: Path | None) -> None:
        self._model = model

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        layers = mbn_layers(model)
        if self.hp.double_forward and self._pending is not None:
            for layer in layers:
                layer.refresh = True
            try:
                with torch.no_grad():
                    model(self.normalize(self._pending))
            finally:
                for layer in layers:
                    layer.refresh = False
        out = super().training_step(model, batch)
        self._pending = batch.x.detach() if self.hp.double_forward else None
        return out

    def state_dict(self) -> dict[str, Any]:
        """The memorised statistics and the batch awaiting its second forward (exact resume)."""
        if self._model is None:
            return {}
        state: dict[str, Any] = {"past": [[list(p) for p in layer.past]
                                          for layer in mbn_layers(self._model)]}
        if self._pending is not None:
            state["pending"] = self._pending
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._model is None or "past" not in state:
            return
        for layer, past in zip(mbn_layers(self._model), state["past"], strict=True):
            layer.past = [(mean, var) for mean, var in past]
        self._pending = state.get("pending")

    def prepare_eval(self, model: nn.Module) -> None:
        self._pending = None
        for layer in mbn_layers(model):
            layer.memorizing = False
            layer.past.clear()
        model.eval()
