"""Auxiliary networks of Meta BatchNorm: relative statistics z (N, 2C) -> raw corrections (N, 2C).

The first C entries of z are the channel means and the last C the channel log-stds (relative to
the layer's running statistics); the output holds the raw gamma corrections, then the beta
corrections. Every net's last layer starts at zero (`reset_last_layer`), so a fresh Meta-BN
layer is exactly BatchNorm2d. The three designs are our choices (the thesis names none):

- `se_mlp`: a squeeze-and-excitation style MLP 2C -> max(C / reduction, min_hidden) -> 2C.
- `per_channel`: one tiny MLP per channel, (mean_c, log-std_c) -> 4 -> (dg_c, db_c), like
  SelfNorm's per-channel map (Tang et al., ICCV 2021) but with a hidden layer.
- `shared`: one hypernetwork for every layer, applied per channel to (mean_c, log-std_c,
  e_c), where e_c is a learned embedding of the layer's channel c (its identity).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AUX_NETS = ("se_mlp", "per_channel", "shared")
CHANNEL_HIDDEN = 4  # hidden units per channel of `per_channel`
EMBED_DIM = 4  # channel-embedding size of `shared`
SHARED_HIDDEN = 32  # hidden units of the shared hypernetwork


def _pairs(z: Tensor) -> Tensor:
    """(N, 2C) -> (N, C, 2): each channel's (mean, log-std)."""
    c = z.shape[1] // 2
    return torch.stack([z[:, :c], z[:, c:]], dim=-1)


def _unpairs(o: Tensor) -> Tensor:
    """(N, C, 2) -> (N, 2C): gamma corrections first, then beta corrections."""
    return torch.cat([o[..., 0], o[..., 1]], dim=1)


class _ZeroOutputMLP(nn.Module):
    """in -> hidden -> out with ReLU, the output layer starting at zero."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)
        self.reset_last_layer()

    def reset_last_layer(self) -> None:
        """Zero the output layer (corrections start at exactly zero)."""
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The output layer's weight and bias (what test-time entropy adaptation updates)."""
        return [self.fc2.weight, self.fc2.bias]

    def forward(self, z: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(z)))


class SEMLPAux(_ZeroOutputMLP):
    """2C -> hidden -> 2C with ReLU (the default auxiliary net)."""

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__(2 * channels, max(channels // max(reduction, 1), min_hidden), 2 * channels)


class PerChannelAux(nn.Module):
    """A separate 2 -> CHANNEL_HIDDEN -> 2 MLP for each channel (grouped, SelfNorm-like)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = CHANNEL_HIDDEN
        bound = 1 / math.sqrt(2)  # nn.Linear's default init for fan-in 2
        self.w1 = nn.Parameter(torch.empty(channels, k, 2).uniform_(-bound, bound))
        self.b1 = nn.Parameter(torch.empty(channels, k).uniform_(-bound, bound))
        self.w2 = nn.Parameter(torch.zeros(channels, 2, k))
        self.b2 = nn.Parameter(torch.zeros(channels, 2))

    def reset_last_layer(self) -> None:
        """Zero the output layer (corrections start at exactly zero)."""
        with torch.no_grad():
            self.w2.zero_()
            self.b2.zero_()

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Every channel's output-layer weight and bias."""
        return [self.w2, self.b2]

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(torch.einsum("nci,cki->nck", _pairs(z), self.w1) + self.b1)
        return _unpairs(torch.einsum("nck,cjk->ncj", h, self.w2) + self.b2)


class SharedHypernet(_ZeroOutputMLP):
    """One MLP (2 + EMBED_DIM) -> SHARED_HIDDEN -> 2 shared by every layer and channel."""

    def __init__(self) -> None:
        super().__init__(2 + EMBED_DIM, SHARED_HIDDEN, 2)


class SharedAux(nn.Module):
    """A layer's view of the shared hypernetwork: its own channel embeddings, shared weights."""

    def __init__(self, hypernet: SharedHypernet, channels: int) -> None:
        super().__init__()
        self.hypernet = hypernet  # the same module in every layer (tied parameters)
        self.embedding = nn.Parameter(torch.randn(channels, EMBED_DIM))

    def reset_last_layer(self) -> None:
        """Zero the shared output layer (corrections start at exactly zero)."""
        self.hypernet.reset_last_layer()

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The shared hypernetwork's output layer (the same parameters in every layer)."""
        return self.hypernet.last_layer_parameters()

    def forward(self, z: Tensor) -> Tensor:
        pairs = _pairs(z)
        embedding = self.embedding.to(pairs.dtype).expand(pairs.shape[0], -1, -1)
        return _unpairs(self.hypernet(torch.cat([pairs, embedding], dim=-1)))


def make_aux_net(kind: str, channels: int, reduction: int = 16, min_hidden: int = 8,
                 shared: SharedHypernet | None = None) -> nn.Module:
    """The auxiliary net `kind` for a layer of `channels` channels."""
    if kind == "se_mlp":
        return SEMLPAux(channels, reduction, min_hidden)
    if kind == "per_channel":
        return PerChannelAux(channels)
    if kind == "shared":
        if shared is None:
            raise ValueError("the 'shared' auxiliary net needs the shared hypernetwork")
        return SharedAux(shared, channels)
    raise ValueError(f"aux_net must be one of {AUX_NETS}, got {kind!r}")
