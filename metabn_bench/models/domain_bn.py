"""Batch Normalization Embeddings (Segu, Tonioni & Tombari, "Batch Normalization Embeddings for
Deep Domain Generalization", 2020; Pattern Recognition 2023).

Every norm layer holds one BatchNorm2d per source domain (convolutions and classifier shared).
A domain's embedding is its BN population statistics; a sample is mapped into the same space by
its instance statistics (per-channel mean and variance over H, W) at each layer of that domain's
branch. The distance to a domain is the 2-Wasserstein distance between the two diagonal
Gaussians, summed over layers:
    W2(N(mu_i, s_i^2), N(mu_d, s_d^2)) = sqrt(sum_c (mu_ic - mu_dc)^2 + (s_ic - s_dc)^2),
the weights are inverse distances normalised to sum to one, w_d = (1/D_d) / sum_j (1/D_j), and
the prediction is sum_d w_d p_d with p_d the softmax of domain d's branch (`DomainMixture`).

Training (the same weighting): the batch is the concatenation of every domain's view (chunk d
is domain d); branch d normalises all of it with chunk d's batch statistics and its own
affine parameters, and measures each sample against chunk d's statistics; the loss is the
negative log of the mixture's probability of the label. The weights are constants for the
gradient (our choice: the distances are a routing rule, not a training objective).
Evaluation: branch d normalises with domain d's population statistics; the distances use a copy
of them taken by `freeze_embeddings`, so a test-time protocol that replaces the running
statistics (`bn`) or adapts gamma and beta (`tent`) changes the branches, not the embeddings.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metabn_bench.models.common import Classifier
from metabn_bench.models.norms import NORMS, NormFactory

EMBEDDINGS = ("sample", "batch")


def wasserstein(mean: Tensor, var: Tensor, ref_mean: Tensor, ref_var: Tensor) -> Tensor:
    """2-Wasserstein distance between diagonal Gaussians, rows of (N, C) against a (C,) one."""
    gap = (mean - ref_mean) ** 2 + (var.clamp_min(0).sqrt() - ref_var.clamp_min(0).sqrt()) ** 2
    return gap.sum(dim=1).sqrt()


def domain_weights(distances: Tensor) -> Tensor:
    """(N, D) distances -> (N, D) weights proportional to 1 / distance, summing to one per row."""
    inverse = 1.0 / distances.clamp_min(1e-12)
    return inverse / inverse.sum(dim=1, keepdim=True)


class DomainBN(nn.Module):
    """One BatchNorm2d per domain; `route` picks the branch, and each forward leaves the
    samples' distances to that branch's domain in `distance` (N,)."""

    def __init__(self, channels: int, domains: int, embed: str = "sample", eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
                                 for _ in range(domains))
        self.embed = embed
        self.route = 0
        self.chunks: int | None = None  # training: the batch is `chunks` domain views
        self.population: tuple[Tensor, Tensor] | None = None  # frozen (D, C) embeddings
        self.distance: Tensor | None = None

    def _sample_statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        dims = (2, 3) if self.embed == "sample" else (0, 2, 3)
        x = x.detach()
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        var, mean = torch.var_mean(x, dim=dims, unbiased=False)
        if self.embed == "batch":  # the test batch as one point, the same for its samples
            var, mean = var.expand(x.shape[0], -1), mean.expand(x.shape[0], -1)
        return mean, var

    def forward(self, x: Tensor) -> Tensor:
        bn = self.bns[self.route]
        if self.training and self.chunks:
            out, ref_mean, ref_var = self._chunk_forward(bn, x)
        else:
            out = bn(x)  # a module call, so the test-time protocols' hooks see it
            if self.population is not None:
                ref_mean, ref_var = self.population[0][self.route], self.population[1][self.route]
            else:
                ref_mean, ref_var = bn.running_mean, bn.running_var
        mean, var = self._sample_statistics(x)
        self.distance = wasserstein(mean, var, ref_mean.to(mean), ref_var.to(mean))
        return out.to(x.dtype)

    def _chunk_forward(self, bn: nn.BatchNorm2d, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training: normalise the whole batch with this domain's chunk statistics."""
        n = x.shape[0] // int(self.chunks or 1)
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32+
        own = x[self.route * n:(self.route + 1) * n]
        var, mean = torch.var_mean(own, dim=(0, 2, 3), unbiased=False)
        if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
            with torch.no_grad():
                count = own.numel() // own.shape[1]
                bn.running_mean.lerp_(mean.detach().to(bn.running_mean), bn.momentum or 0.1)
                unbiased = var.detach() * (count / max(count - 1, 1))
                bn.running_var.lerp_(unbiased.to(bn.running_var), bn.momentum or 0.1)
        out = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + bn.eps)
        out = out * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        return out, mean.detach(), var.detach()

    def freeze_embeddings(self) -> None:
        """Copy every domain's population statistics: the embeddings evaluation measures against."""
        self.population = (torch.stack([bn.running_mean.detach().clone() for bn in self.bns]),
                           torch.stack([bn.running_var.detach().clone() for bn in self.bns]))


def domain_layers(model: nn.Module) -> list[DomainBN]:
    """The model's domain-specific BN layers."""
    return [m for m in model.modules() if isinstance(m, DomainBN)]


class DomainMixture(Classifier):
    """A network built with DomainBN layers, run once per domain branch; its output is the log
    of the distance-weighted mixture of the branches' softmax (so softmax(output) is the
    mixture's probability). `last_weights` holds the (N, D) weights of the last forward."""

    def __init__(self, net: Classifier, domains: int) -> None:
        super().__init__()
        self.net = net
        self.domains = domains
        self.last_weights: Tensor | None = None

    @property
    def classifier(self) -> nn.Linear:  # type: ignore[override]
        return self.net.classifier

    def _route(self, domain: int) -> list[DomainBN]:
        layers = domain_layers(self.net)
        for layer in layers:
            layer.route = domain
        return layers

    def forward_features(self, x: Tensor) -> Tensor:
        """The first domain's branch (clean images) for class activation maps (our choice)."""
        self._route(0)
        return self.net.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        log_probs, distances = [], []
        for domain in range(self.domains):
            layers = self._route(domain)
            log_probs.append(torch.log_softmax(self.net(x).float(), dim=1))
            distances.append(torch.stack([layer.distance for layer in layers]).sum(0))
        weights = domain_weights(torch.stack(distances, dim=1))
        self.last_weights = weights
        mixed = torch.stack(log_probs, dim=1) + weights.log().unsqueeze(-1)
        return torch.logsumexp(mixed, dim=1)


@NORMS.register("domain_bn")
def domain_bn(domains: int = 3, embed: str = "sample", momentum: float = 0.1,
              eps: float = 1e-5) -> NormFactory:
    """DomainBN layers with one BatchNorm2d per domain."""

    def make(channels: int) -> nn.Module:
        return DomainBN(channels, domains, embed, eps, momentum)

    return make
