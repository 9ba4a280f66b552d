"""Meta BatchNorm: BatchNorm2d plus an auxiliary network that corrects gamma and beta per sample.

A reconstruction of the layer described in the abstract of Tsai, "Meta Batch Normalization"
(NTHU master's thesis, 2021): an auxiliary network adjusts the BN affine parameters of every
sample at test time, so that features are recalibrated layer by layer. No paper or code is
public; every choice below is ours and is exposed as an option (see the README, "Meta-BN").

Per layer, for an input x (N, C, H, W):
- normalise as BatchNorm2d does (batch statistics in training, running statistics in eval);
- describe each sample by its statistics relative to the running statistics,
  z = [(mu_i - running_mean) / sqrt(running_var + eps), log sigma_i - log sqrt(running_var + eps)];
- the auxiliary net maps z to (dg, db), each bounded by `bound * tanh`;
- output gamma * (1 + dg_i) * x_hat + beta + db_i.
The auxiliary net's last layer starts at zero, so a fresh layer computes exactly BatchNorm2d.

For meta-learning, a layer in training mode remembers the (detached) batch statistics it
normalised with; inside `meta_test_statistics(model)` it normalises with those instead of the
batch's own and leaves the running statistics alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from metabn_bench.models.aux_nets import AUX_NETS, SharedHypernet, make_aux_net
from metabn_bench.models.norms import NORMS, NormFactory

STATS_SOURCES = ("instance", "batch")
PLACEMENTS = {"all": 0, "first_stage": 1, "first_two_stages": 2}  # resolutions kept (0 = every)


class MetaBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with bounded per-sample corrections of gamma and beta (Meta-BN).

    `aux` maps the relative statistics z (N, 2C) to raw corrections (N, 2C); None makes the
    layer plain BatchNorm2d that still supports meta-test statistics replay.
    """

    def __init__(self, num_features: int, aux: nn.Module | None, bound: float = 0.5,
                 stats_source: str = "instance", eps: float = 1e-5,
                 momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        if stats_source not in STATS_SOURCES:
            raise ValueError(f"stats_source must be one of {STATS_SOURCES}, got {stats_source!r}")
        self.aux = aux
        self.bound = float(bound)
        self.stats_source = stats_source
        self.replay = False  # True inside meta_test_statistics(): normalise with `recorded`
        self.recorded: tuple[Tensor, Tensor] | None = None  # last training batch (mean, var)
        self.last_normalisation: tuple[Tensor, Tensor] | None = None  # what the last call used
        self.last_corrections: tuple[Tensor, Tensor] | None = None  # last (dg, db), detached

    def reset_norm_parameters(self) -> None:
        """gamma = 1, beta = 0 and a zero last auxiliary layer: the layer equals BatchNorm2d."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.aux is not None:
            self.aux.reset_last_layer()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bound={self.bound}, stats_source={self.stats_source}"

    def forward(self, x: Tensor) -> Tensor:
        if self.aux is None and not self.training and not self.replay:
            return super().forward(x)  # eval without corrections: the fused BatchNorm kernel
        c = self.num_features
        need_instance = self.aux is not None and self.stats_source == "instance"
        inst_var = inst_mean = None
        if need_instance or (self.training and not self.replay):
            inst_var, inst_mean = torch.var_mean(x.float(), dim=(2, 3), unbiased=False)
        mean, var = self._normalisation_statistics(x, inst_mean, inst_var)
        self.last_normalisation = (mean.detach(), var.detach())
        inv_std = torch.rsqrt(var + self.eps)
        gamma = self.weight if self.affine else torch.ones_like(mean)
        beta = self.bias if self.affine else torch.zeros_like(mean)
        if self.aux is None:
            scale = gamma * inv_std
            shift = beta - mean * scale
            return x * scale.view(1, c, 1, 1).to(x.dtype) + shift.view(1, c, 1, 1).to(x.dtype)
        dg, db = self.corrections(x, inst_mean, inst_var)
        scale = gamma * (1 + dg) * inv_std  # (N, C)
        shift = beta + db - mean * scale
        n = x.shape[0]
        return x * scale.view(n, c, 1, 1).to(x.dtype) + shift.view(n, c, 1, 1).to(x.dtype)

    def _normalisation_statistics(self, x: Tensor, inst_mean: Tensor | None,
                                  inst_var: Tensor | None) -> tuple[Tensor, Tensor]:
        """(mean, biased var) per channel that x is normalised with; updates running stats."""
        if self.replay:
            if self.recorded is None:
                raise RuntimeError("meta-test pass before any meta-train pass: no statistics")
            return self.recorded
        if not self.training:
            return self.running_mean, self.running_var
        assert inst_mean is not None and inst_var is not None
        # Batch statistics from the instance ones (law of total variance; equal group sizes).
        mean = inst_mean.mean(0)
        var = inst_var.mean(0) + (inst_mean - mean).pow(2).mean(0)
        self.recorded = (mean.detach(), var.detach())
        self._update_running(mean.detach(), var.detach(), x.numel() // x.shape[1])
        return mean, var

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, count: int) -> None:
        """BatchNorm2d's running-statistics update (unbiased variance, momentum or average)."""
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                  else self.momentum)
        unbiased = var * (count / max(count - 1, 1))
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)

    def corrections(self, x: Tensor, inst_mean: Tensor | None = None,
                    inst_var: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(dg, db), each (N, C) in (-bound, bound), for the input x."""
        assert self.aux is not None
        z = self.relative_statistics(x, inst_mean, inst_var)
        raw = self.aux(z)
        c = self.num_features
        dg = self.bound * torch.tanh(raw[:, :c])
        db = self.bound * torch.tanh(raw[:, c:])
        self.last_corrections = (dg.detach(), db.detach())
        return dg, db

    def relative_statistics(self, x: Tensor, inst_mean: Tensor | None = None,
                            inst_var: Tensor | None = None) -> Tensor:
        """z (N, 2C): per-sample (or batch) mean and log-std relative to the running statistics."""
        if self.stats_source == "instance":
            if inst_mean is None or inst_var is None:
                inst_var, inst_mean = torch.var_mean(x.float(), dim=(2, 3), unbiased=False)
            mean, var = inst_mean, inst_var
        else:  # the whole batch's statistics, the same for every sample (transductive)
            if inst_mean is not None and inst_var is not None:
                mean = inst_mean.mean(0)
                var = inst_var.mean(0) + (inst_mean - mean).pow(2).mean(0)
            else:
                var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), unbiased=False)
            mean = mean.expand(x.shape[0], -1)
            var = var.expand(x.shape[0], -1)
        ref_var = self.running_var.float() + self.eps
        z_mean = (mean - self.running_mean.float()) * torch.rsqrt(ref_var)
        z_log_std = 0.5 * (torch.log(var + self.eps) - torch.log(ref_var))
        return torch.cat([z_mean, z_log_std], dim=1)


def meta_bn_layers(model: nn.Module) -> list[MetaBatchNorm2d]:
    """Every MetaBatchNorm2d of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, MetaBatchNorm2d)]


def corrected_layers(model: nn.Module) -> list[MetaBatchNorm2d]:
    """The Meta-BN layers that have an auxiliary net (placement may leave some without)."""
    return [m for m in meta_bn_layers(model) if m.aux is not None]


def auxiliary_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the auxiliary nets, each once (a shared hypernetwork appears once)."""
    seen: dict[int, nn.Parameter] = {}
    for layer in corrected_layers(model):
        for p in layer.aux.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


@contextlib.contextmanager
def meta_test_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block, every Meta-BN layer in training mode normalises with the statistics
    of the last training (meta-train) batch, detached, and keeps its running statistics."""
    layers = [m for m in meta_bn_layers(model) if m.training]
    for m in layers:
        m.replay = True
    try:
        yield
    finally:
        for m in layers:
            m.replay = False


def feature_sizes(model: nn.Module, image_size: int = 32) -> list[int]:
    """Spatial size of the input of each Meta-BN layer for a dummy image (a shape probe)."""
    layers = meta_bn_layers(model)
    sizes: dict[int, int] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, args: sizes.__setitem__(id(mod), args[0].shape[-1])) for m in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [sizes[id(m)] for m in layers]


def restrict_placement(model: nn.Module, placement: str) -> None:
    """Keep auxiliary nets only where `placement` puts them.

    'first_stage' / 'first_two_stages' keep layers whose input has the largest / two largest
    feature-map sizes (the stages where low-level shift lives); the others become plain BN.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {list(PLACEMENTS)}, got {placement!r}")
    keep = PLACEMENTS[placement]
    if keep == 0:
        return
    layers = meta_bn_layers(model)
    sizes = feature_sizes(model)
    kept_sizes = sorted(set(sizes), reverse=True)[:keep]
    for layer, size in zip(layers, sizes):
        if size not in kept_sizes:
            layer.aux = None


@NORMS.register("metabn")
def meta_batch_norm(aux_net: str = "se_mlp", bound: float = 0.5, stats_source: str = "instance",
                    reduction: int = 16, min_hidden: int = 8, momentum: float = 0.1,
                    eps: float = 1e-5) -> NormFactory:
    """Meta BatchNorm layers (reconstructed from Tsai 2021); `aux_net` in se_mlp, per_channel,
    shared (one hypernetwork for every layer the factory makes)."""
    if aux_net not in AUX_NETS:
        raise ValueError(f"aux_net must be one of {AUX_NETS}, got {aux_net!r}")
    shared = SharedHypernet() if aux_net == "shared" else None

    def make(channels: int) -> nn.Module:
        aux = make_aux_net(aux_net, channels, reduction, min_hidden, shared)
        return MetaBatchNorm2d(channels, aux, bound, stats_source, eps, momentum)

    return make


__all__ = ["PLACEMENTS", "STATS_SOURCES", "MetaBatchNorm2d", "auxiliary_parameters",
           "corrected_layers", "meta_batch_norm", "meta_bn_layers", "meta_test_statistics",
           "restrict_placement"]
