"""Meta BatchNorm (reconstructed from Tsai, NTHU master's thesis, 2021): the `metabn` method.

Every BN layer becomes a MetaBatchNorm2d (models/metabn.py) whose auxiliary net corrects gamma
and beta per sample from the sample's statistics. Training modes:

- `episodic` (default): first-order meta-learning in the style of MLDG (Li et al., AAAI 2018).
  Per batch, the meta-train view (crop + flip) gives L_tr; one inner SGD step
  theta' = theta - lr * grad L_tr (first order, the gradient detached); the meta-test view (a
  shift proxy of the same images) gives L_te under theta'; the update minimises
  w_tr * L_tr(theta) + w_te * L_te(theta'). The meta-test pass normalises with the meta-train
  batch's statistics (detached), so the shift survives normalisation and the auxiliary nets
  have to learn to correct it; BN running statistics come from the meta-train pass only.
  Those statistics are re-recorded under theta' (`replay_weights=theta_prime`, the default: one
  extra forward pass of the meta-train view, without gradient), so that the only difference
  between the statistics the meta-test pass is normalised with and its own is the shift of the
  proxy; recorded at theta (`theta`, the former behaviour) they also carry the drift of every
  layer's input caused by the inner step, which the corrections would learn as shift.
  By default (meta_test_gradient=straight_through, our choice) the backward pass of the
  meta-test term goes through the meta-test batch's own statistics, as BatchNorm's does;
  with constant statistics (`detached`) the network failed to train (README, "Meta-BN").
- `joint`: the same two passes and statistics, without the inner step.
- `post_hoc`: a trained vanilla backbone and its BN statistics are frozen; only the auxiliary
  nets learn, on clean and proxy views normalised with the running statistics.

`meta_test_stats=own` (a control) normalises the meta-test pass with its own batch's statistics,
as BatchNorm does in training (gradient through them; running statistics still from the
meta-train pass only), instead of the replayed meta-train statistics: the shift then does not
survive normalisation. With `bound=0` and `training_mode=joint` this is "the same loss with
plain BN": cross-entropy on the clean view plus cross-entropy on the shift-proxy view, each
batch normalised with its own statistics, as AugMix views alone give it. What still differs
from a plain-BN network trained on both views: the running statistics come from the clean view
only, and the auxiliary nets exist (their output is exactly zero, they receive no gradient, and
weight decay only shrinks them). `bound=0` alone is not that control: its meta-test pass is
normalised with the meta-train statistics (and, in `episodic`, taken after the inner step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench import runs
from metabn_bench.config import TrainConfig, from_dict, replace
from metabn_bench.errors import UserError
from metabn_bench.methods.base import Batch, Method, Prerequisite, StepResult
from metabn_bench.methods.registry import METHODS
from metabn_bench.methods.shift_proxy import PROXIES, Proxy, check_proxy, make_proxy
from metabn_bench.models import Classifier
from metabn_bench.models.aux_nets import AUX_NETS
from metabn_bench.models.metabn import (
    PLACEMENTS,
    REPLAY_GRADIENTS,
    STATS_SOURCES,
    auxiliary_parameters,
    corrected_layers,
    meta_test_statistics,
    recording_statistics,
    restrict_placement,
)
from metabn_bench.models.norms import NormFactory, make_norm

TRAINING_MODES = ("episodic", "joint", "post_hoc")
REPLAY_WEIGHTS = ("theta_prime", "theta")  # the weights the replayed statistics are taken under
META_TEST_STATS = ("meta_train", "own")  # what the meta-test pass is normalised with


@dataclass(frozen=True)
class MetaBNHparams:
    """Meta-BN options (defaults: the reconstruction described in the README)."""

    aux_net: str = "se_mlp"  # se_mlp | per_channel | shared
    aux_reduction: int = 16  # se_mlp hidden width = max(channels / reduction, aux_min_hidden)
    aux_min_hidden: int = 8
    placement: str = "all"  # all | first_stage | first_two_stages (largest feature maps)
    stats_source: str = "instance"  # instance (per sample) | batch (transductive)
    bound: float = 0.5  # |dg|, |db| < bound (bound * tanh); 0 switches the corrections off
    training_mode: str = "episodic"  # episodic | joint | post_hoc
    proxy: str = "augmix"  # augmix | validation_corruptions (the 4 extra corruptions) | clean
    proxy_severity: int = 3  # AugMix operation severity
    meta_test_gradient: str = "straight_through"  # straight_through | detached (README)
    meta_train_weight: float = 1.0  # w_tr of the loss
    meta_test_weight: float = 1.0  # w_te of the loss
    inner_lr_scale: float = 1.0  # episodic inner step size, times the current learning rate
    replay_weights: str = "theta_prime"  # episodic: meta-train statistics under theta' | theta
    meta_test_stats: str = "meta_train"  # meta-test normalised with: meta_train (replayed) | own
    backbone_run: str = ""  # post_hoc: a finished vanilla run dir; empty = train one first
    backbone_epochs: int = 0  # post_hoc, self-trained backbone: its epochs (0 = `epochs`)


def _choice(key: str, value: str, valid: tuple[str, ...] | list[str]) -> None:
    if value not in valid:
        raise UserError(f"unknown hparams.{key} '{value}'; valid: {', '.join(valid)}")


@METHODS.register("metabn")
class MetaBN(Method[MetaBNHparams]):
    """Meta BatchNorm, reconstructed from the abstract of Tsai (NTHU thesis, 2021): auxiliary
    nets correct BN gamma/beta per sample; trained episodically on AugMix shift proxies."""

    Hparams = MetaBNHparams
    description = "Meta BatchNorm (reconstruction): per-sample BN affine corrections, meta-learned"

    def __init__(self, cfg: Any, num_classes: int, device: torch.device) -> None:
        super().__init__(cfg, num_classes, device)
        hp = self.hp
        _choice("aux_net", hp.aux_net, AUX_NETS)
        _choice("placement", hp.placement, list(PLACEMENTS))
        _choice("stats_source", hp.stats_source, STATS_SOURCES)
        _choice("training_mode", hp.training_mode, TRAINING_MODES)
        _choice("proxy", hp.proxy, PROXIES)
        _choice("meta_test_gradient", hp.meta_test_gradient, REPLAY_GRADIENTS)
        _choice("replay_weights", hp.replay_weights, REPLAY_WEIGHTS)
        _choice("meta_test_stats", hp.meta_test_stats, META_TEST_STATS)
        if hp.bound < 0 or hp.meta_train_weight < 0 or hp.meta_test_weight < 0 \
                or hp.inner_lr_scale < 0 or hp.backbone_epochs < 0:
            raise UserError("hparams bound, meta_train_weight, meta_test_weight, inner_lr_scale "
                            "and backbone_epochs must be >= 0")
        if hp.aux_reduction < 1 or hp.aux_min_hidden < 1 or not 1 <= hp.proxy_severity <= 10:
            raise UserError("hparams aux_reduction and aux_min_hidden must be >= 1 and "
                            "proxy_severity in 1..10")
        if hp.backbone_run and hp.training_mode != "post_hoc":
            raise UserError("hparams.backbone_run is for training_mode=post_hoc only")
        if hp.meta_test_stats == "own" and hp.training_mode == "post_hoc":
            raise UserError("hparams.meta_test_stats=own is for training_mode episodic or joint; "
                            "post_hoc normalises both views with the frozen running statistics")
        check_proxy(hp.proxy)
        self._proxy: Proxy | None = None

    # -- model ---------------------------------------------------------------------------------
    def norm_layer(self) -> NormFactory:
        hp = self.hp
        return make_norm("metabn", aux_net=hp.aux_net, bound=hp.bound,
                         stats_source=hp.stats_source, reduction=hp.aux_reduction,
                         min_hidden=hp.aux_min_hidden)

    def build_model(self) -> Classifier:
        model = super().build_model()
        restrict_placement(model, self.hp.placement)
        return model

    def proxy(self, x: Tensor) -> Tensor:
        """The meta-test view of a [0, 1] batch."""
        if self._proxy is None:
            self._proxy = make_proxy(self.hp.proxy, self.hp.proxy_severity)
        return self._proxy(x)

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def prerequisite(cls, cfg: TrainConfig) -> Prerequisite | None:
        """post_hoc without `backbone_run`: the vanilla backbone (same recipe and seed), trained
        into RUN_DIR/backbone/ before this run."""
        hp = from_dict(cls.Hparams, cfg.hparams, "hparams")
        if hp.training_mode != "post_hoc" or hp.backbone_run:
            return None
        vanilla = replace(cfg, method="vanilla", hparams={}, epochs=hp.backbone_epochs or cfg.epochs)
        return Prerequisite(vanilla, "backbone")

    def prepare_training(self, model: nn.Module, prerequisite: Path | None) -> None:
        """post_hoc: load the vanilla backbone (`backbone_run`, or the prerequisite trained
        for this run) and freeze all but the aux nets."""
        if self.hp.training_mode != "post_hoc":
            return
        backbone = Path(self.hp.backbone_run) if self.hp.backbone_run else prerequisite
        if backbone is None:
            raise UserError("post_hoc Meta-BN needs its backbone run; train it with `train` "
                            "(which trains the backbone first) or set hparams.backbone_run")
        load_backbone(model, backbone, self.cfg.arch)
        aux = {id(p) for p in auxiliary_parameters(model)}
        for p in model.parameters():
            p.requires_grad_(id(p) in aux)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def training_step(self, model: nn.Module, batch: Batch) -> StepResult:
        """One Meta-BN step in the configured training mode."""
        hp = self.hp
        x_train = self.normalize(batch.x)
        x_test = self.normalize(self.proxy(batch.x))
        if hp.training_mode == "post_hoc":
            model.eval()  # frozen backbone: running statistics, no updates
            logits = model(x_train)
            loss_train = F.cross_entropy(logits, batch.y)
            logits_test = model(x_test)
            loss_test = F.cross_entropy(logits_test, batch.y)
            loss = hp.meta_train_weight * loss_train + hp.meta_test_weight * loss_test
        elif hp.training_mode == "joint":
            logits = model(x_train)
            loss_train = F.cross_entropy(logits, batch.y)
            with self._meta_test_normalisation(model):
                logits_test = model(x_test)
            loss_test = F.cross_entropy(logits_test, batch.y)
            loss = hp.meta_train_weight * loss_train + hp.meta_test_weight * loss_test
        else:
            logits, loss_train, loss_test, loss = self._episode(model, x_train, x_test, batch)
        return StepResult(loss, logits, {"loss_meta_train": float(loss_train.detach()),
                                         "loss_meta_test": float(loss_test.detach()),
                                         **correction_sizes(model)})

    def _episode(self, model: nn.Module, x_train: Tensor, x_test: Tensor,
                 batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """First-order MLDG: (meta-train logits, L_tr, L_te, the loss to minimise)."""
        hp = self.hp
        logits = model(x_train)  # batch statistics; updates running stats; records them
        loss_train = F.cross_entropy(logits, batch.y)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = self._inner_gradients(loss_train, [p for _, p in named], batch)
        step = hp.inner_lr_scale * batch.lr
        fast = {n: p if g is None else p - step * g.detach() for (n, p), g in zip(named, grads)}
        if hp.replay_weights == "theta_prime" and hp.meta_test_stats == "meta_train":
            # The meta-train view's statistics under theta' (running statistics untouched).
            with torch.no_grad(), recording_statistics(model), parameters_replaced(model, fast):
                model(x_train)
        with self._meta_test_normalisation(model), parameters_replaced(model, fast):
            logits_test = model(x_test)
        loss_test = F.cross_entropy(logits_test, batch.y)
        # d/dtheta of L_tr is already in `grads`: a surrogate with that gradient and value 0
        # adds it without a second backward pass through the meta-train graph.
        surrogate = sum((p * g.detach()).sum() for (_, p), g in zip(named, grads) if g is not None)
        train_term = loss_train.detach() + surrogate - surrogate.detach()
        loss = hp.meta_train_weight * train_term + hp.meta_test_weight * loss_test
        return logits, loss_train, loss_test, loss

    def _meta_test_normalisation(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """What the meta-test pass normalises with: the replayed meta-train statistics, or
        (meta_test_stats=own) its own batch's, running statistics left alone in both."""
        if self.hp.meta_test_stats == "own":
            return recording_statistics(model)  # a training-mode pass that updates nothing
        return meta_test_statistics(model, self.hp.meta_test_gradient)

    @staticmethod
    def _inner_gradients(loss: Tensor, params: list[nn.Parameter],
                         batch: Batch) -> list[Tensor | None]:
        """grad L_tr for the inner step, as one float32 process on the whole batch has it.

        Under a GradScaler (float16 autocast) the loss is scaled as the outer backward's is,
        so that small gradients do not flush to zero in float16, and the gradients are
        unscaled in float32; a non-finite one makes the outer gradients non-finite too, and
        the scaler then skips the step as it does for any overflow. Under data parallelism
        the gradients are averaged over the ranks, so theta' is the global batch's.
        """
        scale = batch.loss_scale
        grads = torch.autograd.grad(loss * scale if scale != 1.0 else loss, params,
                                    allow_unused=True)
        present = [i for i, g in enumerate(grads) if g is not None]
        averaged = batch.average_over_ranks([grads[i].detach() for i in present])
        out: list[Tensor | None] = [None] * len(grads)
        for i, g in zip(present, averaged):
            if scale != 1.0:  # unscaled in float32 at least (float16 would flush to zero)
                g = g.to(torch.promote_types(g.dtype, torch.float32)).div(scale)
            out[i] = g.to(params[i].dtype)
        return out


@contextlib.contextmanager
def parameters_replaced(model: nn.Module, values: Mapping[str, Tensor]) -> Iterator[None]:
    """Run `model` with its parameters replaced by `values` (name -> tensor), then restore.

    Like torch.func.functional_call, but safe for modules shared between layers (the shared
    hypernetwork): functional_call in torch 2.14 leaves tied parameters replaced afterwards.
    Each parameter slot is swapped once (model.modules() lists a shared module once).
    """
    by_id = {id(p): values[n] for n, p in model.named_parameters() if n in values}
    saved: list[tuple[nn.Module, str, nn.Parameter]] = []
    try:
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None and id(p) in by_id:
                    saved.append((module, name, p))
                    module._parameters[name] = by_id[id(p)]  # type: ignore[assignment]
        yield
    finally:
        for module, name, p in reversed(saved):
            module._parameters[name] = p


def correction_sizes(model: nn.Module) -> dict[str, float]:
    """Mean |dg| and |db| over the corrected layers in the last forward pass (logged per step)."""
    layers = [m for m in corrected_layers(model) if m.last_corrections is not None]
    if not layers:
        return {}
    dg = torch.stack([m.last_corrections[0].abs().mean() for m in layers]).mean()
    db = torch.stack([m.last_corrections[1].abs().mean() for m in layers]).mean()
    return {"dgamma_abs": float(dg), "dbeta_abs": float(db)}


def load_backbone(model: nn.Module, run_dir: Path, arch: str) -> None:
    """Load a finished vanilla run's weights and BN statistics into a Meta-BN model."""
    if not runs.is_finished(run_dir):
        raise UserError(f"backbone run '{run_dir}' is not a finished run (no '{runs.DONE}' marker)")
    stored = runs.load_config(run_dir)
    if stored.arch != arch or stored.method != "vanilla":
        raise UserError(f"backbone run '{run_dir}' is {stored.method} / "
                        f"{stored.arch}; post_hoc needs a vanilla {arch} run")
    state = runs.load_weights(run_dir)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise UserError(f"backbone run '{run_dir}' does not fit the model: "
                        f"{str(exc).splitlines()[0]}") from None
    missing = [k for k in missing if ".aux." not in k]
    if missing or unexpected:
        raise UserError(f"backbone run '{run_dir}' does not fit the model (missing "
                        f"{missing[:3]}, unexpected {list(unexpected)[:3]})")
