"""Memorized Batch Normalization (Guo, Wu, Deng, Chen & Tan, "Double Forward Propagation for
Memorized Batch Normalization", AAAI 2018).

In training, an MBN layer normalises with statistics memorised over the current and the
`memory` - 1 previous batches, combined with normalised weights eta (sum 1):
    mu = sum_i eta_i mu_i,   sigma^2 = sum_i eta_i (sigma_i^2 + mu_i^2) - mu^2
(the mean and variance of the pooled batches); only the current batch's statistics carry
gradients. Double-Forward: after the SGD step that used a batch, the batch is forwarded once
more under the updated weights, without gradients, and the statistics memorised for it are
replaced by the re-measured ones, so the memory follows the weight change (`refresh`).

Training and inference follow one rule: the running statistics are the memorised ones (the
combination above, after every training step), not an exponential moving average, so eval
mode normalises with the memorised statistics of the last batches of training.

Our choices: the weights eta (the text we could consult gives their normalisation, not their
values): `uniform` (1/n each) or `linear` (proportional to n - i for the i-th newest);
`memory` = 4 by default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metabn_bench.models.norms import NORMS, NormFactory

WEIGHTINGS = ("uniform", "linear")


def memory_weights(n: int, weighting: str) -> list[float]:
    """The weights eta of the current batch and the n - 1 memorised ones (newest first)."""
    raw = [1.0] * n if weighting == "uniform" else [float(n - i) for i in range(n)]
    total = sum(raw)
    return [r / total for r in raw]


class MemorizedBN(nn.BatchNorm2d):
    """MBN (Guo et al., AAAI 2018): BatchNorm2d normalising with the weighted statistics of the
    last `memory` batches; the running statistics are those memorised statistics.

    Plain BatchNorm2d while `memorizing` is off (evaluation's test-time protocols); with
    `refresh` on (the Double-Forward pass) it normalises with its own batch statistics and
    replaces the newest memorised entry with them.
    """

    def __init__(self, channels: int, memory: int = 4, weighting: str = "uniform",
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.memory = memory
        self.weighting = weighting
        self.memorizing = True
        self.refresh = False
        self.past: list[tuple[Tensor, Tensor]] = []  # (mean, biased var), newest first

    def _normalise(self, y: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        out = (y - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out

    def memorised_statistics(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        """The weighted mean and variance of the current batch's (mean, var) and the memory."""
        stats = [(mean, var), *self.past]
        eta = memory_weights(len(stats), self.weighting)
        mu = sum(e * m for e, (m, _) in zip(eta, stats))
        second = sum(e * (v + m * m) for e, (m, v) in zip(eta, stats))
        return mu, (second - mu * mu).clamp_min(0.0)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.memorizing):
            self.past.clear()
            return super().forward(x)
        y = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32+
        var, mean = torch.var_mean(y, dim=(0, 2, 3), unbiased=False)
        if self.refresh:
            if self.past:
                self.past[0] = (mean.detach(), var.detach())
            return self._normalise(y, mean, var).to(x.dtype)
        mu, sigma2 = self.memorised_statistics(mean, var)
        if self.track_running_stats and self.num_batches_tracked is not None:
            with torch.no_grad():  # inference uses the memorised statistics (one rule)
                self.running_mean.copy_(mu.detach())
                self.running_var.copy_(sigma2.detach())
                self.num_batches_tracked.add_(1)
        self.past.insert(0, (mean.detach(), var.detach()))
        del self.past[self.memory - 1:]
        return self._normalise(y, mu, sigma2).to(x.dtype)


def mbn_layers(model: nn.Module) -> list[MemorizedBN]:
    """The model's MBN layers."""
    return [m for m in model.modules() if isinstance(m, MemorizedBN)]


@NORMS.register("mbn")
def memorized_bn(memory: int = 4, weighting: str = "uniform", momentum: float = 0.1,
                 eps: float = 1e-5) -> NormFactory:
    """MBN layers memorising `memory` batches (the current one included)."""

    def make(channels: int) -> nn.Module:
        return MemorizedBN(channels, memory, weighting, eps, momentum)

    return make
