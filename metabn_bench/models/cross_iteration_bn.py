"""Cross-Iteration Batch Normalization (Yao, Cao, Zheng, Huang & Lin, "Cross-Iteration Batch
Normalization", CVPR 2021).

In training, a CBN layer normalises with statistics pooled over the current and the k - 1
previous iterations. The statistics of iteration t - tau were measured under the weights of
then, theta_{t-tau}; the paper compensates for the change of the preceding layer's weights with
a first-order Taylor term:
    mu_{t-tau}(theta_t) ~ mu_{t-tau} + (d mu_{t-tau} / d theta_{t-tau}) . (theta_t - theta_{t-tau})
and the same for the second moment nu = E[y^2]. Pooled over the window:
    mu = mean_tau mu_{t-tau}(theta_t),  nu = mean_tau max(nu_{t-tau}(theta_t), mu_{t-tau}(theta_t)^2),
    sigma^2 = nu - mu^2,
and only the current iteration's statistics carry gradients (the compensated past ones are
constants). As in the paper, only the layer right before the norm is compensated (changes of
earlier layers are neglected).

Our choices where the paper's setting does not carry over:
- "The preceding layer" is the convolution executed last before the norm layer in a forward pass
  (`link_producers`); in pre-activation networks the norm's input is that convolution's output plus
  the residual, and the Taylor term is the derivative with respect to that convolution only.
- The gradients d mu / d theta and d nu / d theta come from autograd on the current statistics
  (the paper derives them in closed form for a convolution; they are the same numbers).
- The running statistics, used in eval mode, are updated from the pooled statistics (those that
  normalised the training batch), unbiased with the window's element count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metabn_bench.models.norms import NORMS, NormFactory


@dataclass
class PastStatistics:
    """One previous iteration of a CBN layer: its per-channel mean and second moment, and
    (compensated variant) their gradients with respect to the producer's weights then."""

    mean: Tensor  # (C,)
    square: Tensor  # (C,) E[y^2]
    grad_mean: Tensor | None = None  # (C, C_in, kh, kw): row c is d mean_c / d theta_c
    grad_square: Tensor | None = None
    weight: Tensor | None = None  # the producer's weights at that iteration

    def as_dict(self) -> dict[str, Tensor]:
        """The tensors that are set (checkpoints hold no None)."""
        return {k: v for k, v in vars(self).items() if v is not None}


class CrossIterationBN(nn.BatchNorm2d):
    """CBN (Yao et al., CVPR 2021): BatchNorm2d whose training statistics pool the last
    `window` iterations, compensated for the producer's weight change (`compensate`).

    It behaves as BatchNorm2d in eval mode, with window 1, or while `cross_iteration` is off
    (the burn-in, and the test-time protocols: see methods/cbn.py).
    """

    def __init__(self, channels: int, window: int = 4, compensate: bool = True,
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        self.window = window
        self.compensate = compensate
        self.cross_iteration = True
        self.producer: tuple[nn.Conv2d, ...] = ()  # a tuple: not registered as a submodule
        self.past: list[PastStatistics] = []  # newest first, at most window - 1

    def producer_weight(self) -> Tensor | None:
        """The weights of the convolution right before this layer, when linked."""
        return self.producer[0].weight if self.producer else None

    def compensated(self, past: PastStatistics, weight: Tensor | None) -> tuple[Tensor, Tensor]:
        """A past iteration's (mean, second moment) moved to the producer's current weights by
        the first-order Taylor term; unchanged without gradients (uncompensated variant)."""
        if weight is None or past.weight is None or past.grad_mean is None or past.grad_square is None:
            return past.mean, past.square
        delta = weight.detach().to(past.weight) - past.weight
        return (past.mean + (past.grad_mean * delta).flatten(1).sum(1),
                past.square + (past.grad_square * delta).flatten(1).sum(1))

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.cross_iteration and self.window > 1):
            self.past.clear()
            return super().forward(x)
        y = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32+
        mean, square = y.mean(dim=(0, 2, 3)), (y * y).mean(dim=(0, 2, 3))
        weight = self.producer_weight()
        means, squares = [mean], [square]
        for past in self.past:
            m, s = self.compensated(past, weight if self.compensate else None)
            means.append(m)
            squares.append(torch.maximum(s, m * m))  # a variance is never negative
        entry = PastStatistics(mean.detach(), square.detach())
        if self.compensate and weight is not None and weight.requires_grad and mean.requires_grad:
            g_mean, = torch.autograd.grad(mean.sum(), weight, retain_graph=True, allow_unused=True)
            g_square, = torch.autograd.grad(square.sum(), weight, retain_graph=True,
                                            allow_unused=True)
            if g_mean is not None and g_square is not None:
                entry = PastStatistics(mean.detach(), square.detach(), g_mean.to(y.dtype),
                                       g_square.to(y.dtype), weight.detach().to(y.dtype).clone())
        mu = torch.stack(means).mean(0)
        var = (torch.stack(squares).mean(0) - mu * mu).clamp_min(0.0)
        self._update_running(mu.detach(), var.detach(), len(means) * y.numel() // y.shape[1])
        out = (y - mu.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        self.past.insert(0, entry)
        del self.past[self.window - 1:]
        return out.to(x.dtype)

    def _update_running(self, mean: Tensor, var: Tensor, count: int) -> None:
        if not self.track_running_stats or self.num_batches_tracked is None:
            return
        self.num_batches_tracked.add_(1)
        factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                  else self.momentum)
        with torch.no_grad():
            self.running_mean.lerp_(mean.to(self.running_mean), factor)
            unbiased = var * (count / max(count - 1, 1))
            self.running_var.lerp_(unbiased.to(self.running_var), factor)


def link_producers(model: nn.Module, image_size: int = 16) -> None:
    """Link every CBN layer to the convolution executed last before it in a forward pass (one
    eval-mode pass on zeros, which changes no state), when that convolution has the layer's
    channel count, no bias and one group; otherwise the layer stays uncompensated."""
    order: list[nn.Module] = []
    watched = [m for m in model.modules() if isinstance(m, (nn.Conv2d, CrossIterationBN))]
    handles = [m.register_forward_pre_hook(lambda mod, args: order.append(mod)) for m in watched]
    was_training = model.training
    model.eval()
    try:
        first = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(2, 3, image_size, image_size, device=first.device, dtype=first.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    last: nn.Conv2d | None = None
    for m in order:
        if isinstance(m, nn.Conv2d):
            last = m
        elif (last is not None and last.out_channels == m.num_features and last.bias is None
              and last.groups == 1):
            m.producer = (last,)


def cbn_layers(model: nn.Module) -> list[CrossIterationBN]:
    """The model's CBN layers."""
    return [m for m in model.modules() if isinstance(m, CrossIterationBN)]


@NORMS.register("cbn")
def cross_iteration_bn(window: int = 4, compensate: bool = True, momentum: float = 0.1,
                       eps: float = 1e-5) -> NormFactory:
    """CBN layers pooling `window` iterations (compensated unless `compensate` is False)."""

    def make(channels: int) -> nn.Module:
        return CrossIterationBN(channels, window, compensate, eps, momentum)

    return make
