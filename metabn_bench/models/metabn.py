"""Meta BatchNorm: BatchNorm2d plus an auxiliary network that corrects gamma and beta per sample.

A reconstruction of the layer described in the abstract of Tsai, "Meta Batch Normalization"
(NTHU master's thesis, 2021): an auxiliary network adjusts the BN affine parameters of every
sample at test time, so that features are recalibrated layer by layer. No paper or code is
public; every choice below is ours and is exposed as an option (see the README, "Meta-BN").

Per layer, for an input x (N, C, H, W):
- normalise as BatchNorm2d does (batch statistics in training, running statistics in eval);
- describe each sample by its statistics relative to the reference statistics (m, v),
  z = [(mu_i - m) / sqrt(v + eps), log sigma_i - log sqrt(v + eps)];
  in training (m, v) are the running statistics; at test time they are the source statistics,
  the running statistics as training left them, pinned by `pin_source_statistics` so that a
  test-time protocol which changes what the layer normalises with (BN adaptation overwrites
  the running statistics, Tent normalises with the batch's) does not change what z measures
  the shift against (see evaluation/protocols.py for what each protocol means for Meta-BN);
- the auxiliary net maps z to (dg, db), each bounded by `bound * tanh`;
- output gamma * (1 + dg_i) * x_hat + beta + db_i.
The auxiliary net's last layer starts at zero, so a fresh layer computes exactly BatchNorm2d.

For meta-learning, a layer in training mode remembers the (detached) batch statistics it
normalised with; inside `meta_test_statistics(model)` it normalises with those instead of the
batch's own and leaves the running statistics alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench.models.aux_nets import AUX_NETS, SharedHypernet, make_aux_net
from metabn_bench.models.metabn_control import CorrectionControl
from metabn_bench.models.metabn_moments import (
    accumulation_dtype,
    global_moments,
    instance_moments,
    normalise,
)
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
        self.replay_gradient = "detached"  # or "straight_through" (see meta_test_statistics)
        self.recorded: tuple[Tensor, Tensor] | None = None  # last training batch (mean, var)
        self.last_normalisation: tuple[Tensor, Tensor] | None = None  # what the last call used
        self.last_corrections: tuple[Tensor, Tensor] | None = None  # last (dg, db), detached
        # The reference of z at test time (None: the running statistics). Not persistent: the
        # source statistics are the saved running statistics, pinned after loading.
        self.register_buffer("source_mean", None, persistent=False)
        self.register_buffer("source_var", None, persistent=False)
        self.control: CorrectionControl | None = None  # evaluation-only attribution control
        # True inside `recording_statistics`: a training-mode pass records its batch statistics
        # for a later meta-test pass and leaves the running statistics alone.
        self.record_only = False
        self.sum_over_ranks: Callable[[Tensor], Tensor] | None = None  # see `synchronise`
        self._global_count = 0.0  # images per channel in the last synchronised batch

    def reset_norm_parameters(self) -> None:
        """gamma = 1, beta = 0 and a zero last auxiliary layer: the layer equals BatchNorm2d."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.aux is not None:
            self.aux.reset_last_layer()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bound={self.bound}, stats_source={self.stats_source}"

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and not self.replay:
            return self._eval_forward(x)
        c = self.num_features
        own: tuple[Tensor, Tensor] | None = None  # the batch's statistics, for batch-z
        if self.replay:  # meta-test: the meta-train batch's statistics, detached
            if self.recorded is None:
                raise RuntimeError("meta-test pass before any meta-train pass: no statistics")
            if self.replay_gradient == "straight_through":
                return self._straight_through_forward(x)
            mean, var = self.recorded
            weight, bias = (self.weight, self.bias) if self.aux is None else (None, None)
            out = F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
            if self.sum_over_ranks is not None and self.stats_source == "batch":
                with torch.no_grad():
                    own = self._synced_moments(x)
        elif self.sum_over_ranks is not None:  # data-parallel: statistics of the global batch
            mean, var = self._synced_moments(x)
            if not self.record_only:
                self._update_running(mean.detach(), var.detach())
            out = normalise(x, mean, var, self.eps,
                             (self.weight, self.bias) if self.aux is None else None)
            mean, var = mean.detach(), var.detach()
            self.recorded = own = (mean, var)
        else:  # BatchNorm2d's training step: fused, updates the running statistics
            # recording only: no running statistics to update, and no batch counted
            factor = 0.0 if self.record_only else self._momentum_factor()
            running = (None, None) if self.record_only else (self.running_mean, self.running_var)
            weight, bias = (self.weight, self.bias) if self.aux is None else (None, None)
            out, mean, inv_std = torch.native_batch_norm(
                x, weight, bias, *running, True, factor, self.eps)
            mean, var = mean.detach(), inv_std.detach().pow(-2) - self.eps
            self.recorded = own = (mean, var)
        self.last_normalisation = (mean, var)
        if self.aux is None:
            return out
        dg, db = self.corrections(x, batch_stats=own)
        gamma = self.weight * (1 + dg) if self.affine else 1 + dg  # (N, C)
        beta = self.bias + db if self.affine else db
        n = x.shape[0]
        return torch.addcmul(beta.view(n, c, 1, 1).to(out.dtype), out,
                             gamma.view(n, c, 1, 1).to(out.dtype))

    def _straight_through_forward(self, x: Tensor) -> Tensor:
        """Meta-test pass normalised with the meta-train statistics (the values, detached),
        with BatchNorm's gradient through the meta-test batch's own statistics.

        mean = m_train + (m_own - stop_gradient(m_own)), likewise the variance: the forward
        value is exactly the meta-train statistics; the backward keeps BatchNorm's
        projection of the gradient (its invariance to the scale of the preceding weights),
        which constant statistics lose.
        """
        rec_mean, rec_var = self.recorded
        inst_mean, inst_var = instance_moments(x, keep_grad=True)
        if self.sum_over_ranks is not None:
            own_mean, own_var = self._synced_moments(x)
        else:
            own_mean = inst_mean.mean(0)
            own_var = inst_var.mean(0) + (inst_mean - own_mean).pow(2).mean(0)
        mean = rec_mean + (own_mean - own_mean.detach())
        var = rec_var + (own_var - own_var.detach())
        self.last_normalisation = (rec_mean, rec_var)
        c, n = self.num_features, x.shape[0]
        if self.aux is None:
            gamma, beta = self.weight.expand(n, c), self.bias.expand(n, c)
        else:
            dg, db = self.corrections(x, (own_mean.detach(), own_var.detach()),
                                      (inst_mean.detach(), inst_var.detach()))
            gamma = self.weight * (1 + dg) if self.affine else 1 + dg
            beta = self.bias + db if self.affine else db
        scale = gamma * torch.rsqrt(var + self.eps)  # (N, C)
        shift = beta - mean * scale
        return torch.addcmul(shift.view(n, c, 1, 1).to(x.dtype), x,
                             scale.view(n, c, 1, 1).to(x.dtype))

    def _eval_forward(self, x: Tensor) -> Tensor:
        """Running statistics; the per-sample affine folded into one pass over x."""
        if self.aux is None:
            return super().forward(x)  # the fused BatchNorm kernel
        c, n = self.num_features, x.shape[0]
        self.last_normalisation = (self.running_mean, self.running_var)
        inv_std = torch.rsqrt(self.running_var + self.eps)
        dg, db = self.corrections(x)
        gamma = self.weight * (1 + dg) if self.affine else 1 + dg
        beta = self.bias + db if self.affine else db
        scale = gamma * inv_std  # (N, C)
        shift = beta - self.running_mean * scale
        # x * scale + shift in one fused pass; it keeps x's memory format.
        return torch.addcmul(shift.view(n, c, 1, 1).to(x.dtype), x,
                             scale.view(n, c, 1, 1).to(x.dtype))

    def synchronise(self, sum_over_ranks: Callable[[Tensor], Tensor] | None) -> None:
        """Take training statistics over the batches of every data-parallel rank.

        `sum_over_ranks` is a differentiable all-reduce (sum); training/distributed.py passes
        it, so that W processes with B/W images each compute what one process computes with
        B: the normalisation statistics, the statistics replayed in the meta-test pass and
        their gradients are those of the global batch. None: per-process statistics.
        """
        self.sum_over_ranks = sum_over_ranks

    def _synced_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, biased var) (C,) of the global batch, differentiable (see `global_moments`)."""
        assert self.sum_over_ranks is not None
        mean, var, self._global_count = global_moments(x, self.running_mean.detach(),
                                                       self.sum_over_ranks)
        return mean, var

    def _update_running(self, mean: Tensor, var: Tensor) -> None:
        """BatchNorm2d's update of the running statistics (unbiased variance)."""
        factor = self._momentum_factor()
        n = self._global_count
        with torch.no_grad():
            self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
            unbiased = var * (n / max(n - 1, 1))
            self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype),
                                                   alpha=factor)

    def z_reference(self) -> tuple[Tensor, Tensor]:
        """(mean, var) that z is measured against: the pinned source statistics, or the
        running statistics when none are pinned (training)."""
        if self.source_mean is not None and self.source_var is not None:
            return self.source_mean, self.source_var
        return self.running_mean, self.running_var

    def _momentum_factor(self) -> float:
        """BatchNorm2d's update factor: momentum, or a cumulative average when it is None."""
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return float(self.momentum)

    def corrections(self, x: Tensor, batch_stats: tuple[Tensor, Tensor] | None = None,
                    instance: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(dg, db), each (N, C) in [-bound, bound], for the input x.

        The statistics are read without gradient (our choice): the backbone is trained
        through the normalised features, not through what the auxiliary net reads; this
        keeps the backward pass close to BatchNorm's cost.
        """
        assert self.aux is not None
        c = self.num_features
        if self.control is not None and self.control.static is not None:
            dg, db = self.control.static_corrections(x.shape[0])
            self.last_corrections = (dg.detach(), db.detach())
            return dg, db
        with torch.no_grad():
            z = self.relative_statistics(x, batch_stats, instance)
            if self.control is not None:
                z = self.control.transform_z(z)
        raw = self.aux(z)
        dg = self.bound * torch.tanh(raw[:, :c])
        db = self.bound * torch.tanh(raw[:, c:])
        self.last_corrections = (dg.detach(), db.detach())
        return dg, db

    def relative_statistics(self, x: Tensor, batch_stats: tuple[Tensor, Tensor] | None = None,
                            instance: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """z (N, 2C): per-sample (or batch) mean and log-std relative to the reference
        statistics: the pinned source statistics where set, else the running statistics.

        `batch_stats` / `instance` ((mean, var) of the batch / of each sample) save
        recomputing them when the caller has them.
        """
        n = x.shape[0]
        if self.stats_source == "instance":
            mean, var = instance if instance is not None else instance_moments(x)
        else:  # the whole batch's statistics, the same for every sample (transductive)
            if batch_stats is None:
                inst_mean, inst_var = instance_moments(x)
                batch_mean = inst_mean.mean(0)
                # law of total variance over equal-sized groups
                batch_stats = (batch_mean, inst_var.mean(0) + (inst_mean - batch_mean).pow(2).mean(0))
            mean = batch_stats[0].expand(n, -1)
            var = batch_stats[1].expand(n, -1)
        ref_mean, ref_var = self.z_reference()
        dtype = accumulation_dtype(x)  # float32 at least; float64 for a float64 model
        mean, var = mean.to(dtype), var.to(dtype)
        ref_var = ref_var.to(dtype) + self.eps
        z_mean = (mean - ref_mean.to(dtype)) * torch.rsqrt(ref_var)
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


REPLAY_GRADIENTS = ("detached", "straight_through")


@contextlib.contextmanager
def meta_test_statistics(model: nn.Module, gradient: str = "detached") -> Iterator[None]:
    """Within the block, every Meta-BN layer in training mode normalises with the statistics
    of the last training (meta-train) batch, detached, and keeps its running statistics.

    gradient='detached' treats those statistics as constants in the backward pass;
    'straight_through' back-propagates as BatchNorm does through the batch's own statistics
    (the forward values stay the meta-train ones).
    """
    if gradient not in REPLAY_GRADIENTS:
        raise ValueError(f"gradient must be one of {REPLAY_GRADIENTS}, got {gradient!r}")
    layers = [m for m in meta_bn_layers(model) if m.training]
    for m in layers:
        m.replay, m.replay_gradient = True, gradient
    try:
        yield
    finally:
        for m in layers:
            m.replay, m.replay_gradient = False, "detached"


@contextlib.contextmanager
def recording_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block, every Meta-BN layer in training mode records the statistics of its
    batch for the next meta-test pass, as a training pass does, but keeps its running
    statistics (and its count of batches) as they are: a pass under other weights (the
    episodic inner step's theta') sets what the meta-test pass replays without counting as a
    training batch."""
    layers = [m for m in meta_bn_layers(model) if m.training]
    for m in layers:
        m.record_only = True
    try:
        yield
    finally:
        for m in layers:
            m.record_only = False


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


__all__ = ["PLACEMENTS", "REPLAY_GRADIENTS", "STATS_SOURCES", "MetaBatchNorm2d", "auxiliary_parameters",
           "corrected_layers", "meta_batch_norm", "meta_bn_layers", "meta_test_statistics",
           "recording_statistics", "restrict_placement"]
