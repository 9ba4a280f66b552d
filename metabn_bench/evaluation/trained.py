"""Rebuild a finished run: its method and model, weights loaded, in the test-time configuration.

The one place that turns a run directory back into a model (evaluation, CAM pictures and the
Meta-BN diagnostics all start here). It lives in the evaluation wing, not in runs.py, because
it builds methods and models, and the methods themselves read run directories (post_hoc
Meta-BN loads its backbone) through runs.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from metabn_bench import runs
from metabn_bench.config import TrainConfig
from metabn_bench.device import memory_format
from metabn_bench.errors import UserError
from metabn_bench.methods import Method, build_method
from metabn_bench.models import Classifier


@dataclass
class TrainedRun:
    """A finished run rebuilt on a device."""

    run_dir: Path
    config: TrainConfig
    method: Method
    model: Classifier
    classes: list[str]
    fmt: torch.memory_format  # the memory format the model (and its inputs) use

    @property
    def label(self) -> str:
        """'<method> (seed <seed>)', as pictures and tables name a run."""
        return f"{self.config.method} (seed {self.config.seed})"


def load_trained(run_dir: str | Path, device: torch.device, channels_last: bool | None = None,
                 hint: str = "") -> TrainedRun:
    """Rebuild a finished run's model on `device`, weights loaded, after `prepare_eval`.

    `channels_last=None` uses the memory format the run was trained with (as evaluation does);
    False keeps the default layout. `hint` is appended to the error of an unfinished run.
    """
    run_dir = runs.require_finished(run_dir, hint)
    cfg = runs.load_config(run_dir)
    classes = runs.class_names(run_dir)
    method = build_method(cfg, len(classes), device)
    fmt = memory_format(device, cfg.channels_last if channels_last is None else channels_last)
    model = method.build_model().to(device, memory_format=fmt)
    state = runs.load_weights(run_dir, device)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise UserError(f"'{run_dir / runs.MODEL}' does not hold the weights of a {cfg.arch} "
                        f"({str(exc).splitlines()[0][:120]}); re-run the train command") from None
    method.prepare_eval(model)
    return TrainedRun(run_dir, cfg, method, model, classes, fmt)
