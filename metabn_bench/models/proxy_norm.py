"""Proxy Normalization (Labatie, Masters, Eaton-Rosen & Luschi, "Proxy-Normalizing Activations
to Match Batch Normalization while Removing Batch Dependence", NeurIPS 2021).

A batch-independent norm (GroupNorm, or LayerNorm = one group) and a per-channel affine give
y = gamma * x_hat + beta; after the activation, z = relu(y) is normalised per channel with the
mean and variance of a Gaussian proxy pushed through the same affine and activation:
    y~_c = gamma_c * (beta~_c + (1 + gamma~_c) * xi) + beta_c,  xi ~ N(0, 1),
    out = (z - E[relu(y~_c)]) / sqrt(Var[relu(y~_c)] + eps),
with the proxy's own parameters beta~, gamma~ (zero at init). y~_c is Gaussian, N(m_c, s_c^2)
with m = gamma * beta~ + beta and s = |gamma * (1 + gamma~)|, and every registered architecture's
activation is ReLU, so the proxy moments are the exact rectified-Gaussian ones (our choice; the
paper estimates them from proxy samples, for any activation). A layer whose output does not go
through an activation in the architecture is GroupNorm + affine only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench.models.norms import NORMS, NormFactory


class ProxyNorm(nn.Module):
    """GroupNorm (or LayerNorm) + affine, with Proxy Normalization after the activation."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups = math.gcd(groups, channels)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.proxy_shift = nn.Parameter(torch.zeros(channels))  # beta~
        self.proxy_scale = nn.Parameter(torch.zeros(channels))  # gamma~

    def reset_norm_parameters(self) -> None:
        """Unit scale, zero shift, the proxy at N(0, 1) (called by init_weights)."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()
            self.proxy_shift.zero_()
            self.proxy_scale.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """GroupNorm + affine: the layer where no activation follows."""
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)

    def proxy_moments(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and variance of relu(y~), y~ ~ N(m, s^2), in closed form."""
        m = self.weight * self.proxy_shift + self.bias
        # The floor keeps the division finite when gamma reaches 0 (the proxy is then a point).
        s = (self.weight * (1 + self.proxy_scale)).abs().clamp_min(1e-6)
        a = m / s
        cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
        pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        mean = m * cdf + s * pdf
        second = (m * m + s * s) * cdf + m * s * pdf
        return mean, (second - mean * mean).clamp_min(0.0)

    def forward_activated(self, x: Tensor) -> Tensor:
        """relu(GroupNorm + affine), normalised with the proxy's moments."""
        mean, var = self.proxy_moments()
        z = torch.relu(self.forward(x))
        return (z - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + self.eps)


@NORMS.register("proxy_norm")
def proxy_norm(norm: str = "gn", groups: int = 32, eps: float = 1e-5) -> NormFactory:
    """Proxy Norm layers on GroupNorm (`groups`, gcd with C) or LayerNorm (`norm='ln'`)."""

    def make(channels: int) -> nn.Module:
        return ProxyNorm(channels, 1 if norm == "ln" else groups, eps)

    return make
