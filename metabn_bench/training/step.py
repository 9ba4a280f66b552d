"""One training step: the method's batch transform and loss, backward, the optimiser step.

The training loop, the speed and cost benchmarks, the cost estimate and the method tests all
call this function, so what they time or test is the step that trains the runs.
"""

from __future__ import annotations

import torch
from torch import nn

from metabn_bench.device import autocast
from metabn_bench.methods import Batch, Method, StepResult
from metabn_bench.training import distributed


def train_step(method: Method, model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None = None, amp: bool = False) -> StepResult:
    """One optimiser step on `batch` (images in [0, 1] after crop and flip); the step's result.

    `amp` runs the loss under autocast (CUDA only; a no-op on the CPU); `scaler` scales the
    loss for float16 autocast (None: a plain backward pass). Under torch.distributed the
    gradients are averaged over the ranks before the step. The scheduler is the caller's.
    """
    batch = method.batch_transform(batch)
    # What a method's own inner step needs to compute what one float32 process computes.
    batch.loss_scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0
    batch.average_over_ranks = distributed.average_over_ranks
    with autocast(batch.x.device, amp):
        out = method.training_step(model, batch)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        out.loss.backward()
        distributed.sync_gradients(model)
        optimizer.step()
    else:
        scaler.scale(out.loss).backward()
        distributed.sync_gradients(model)
        scaler.step(optimizer)
        scaler.update()
    return out
