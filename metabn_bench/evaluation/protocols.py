"""Test-time protocols: how a trained model meets a test batch.

- `none`: the model as trained (eval mode, running statistics).
- `bn`: BatchNorm statistics adaptation (Schneider et al., NeurIPS 2020): normalise with
  p * training statistics + (1 - p) * test-batch statistics, p = prior / (prior + batch size);
  prior 0 (default) is full adaptation.
- `tent`: Tent (Wang et al., ICLR 2021): test-batch statistics, and one Adam step (lr 1e-3) per
  batch on the BatchNorm affine parameters to minimise the mean prediction entropy; the
  prediction is the forward pass before the update.
- `tent_aux` (Meta-BN only): Tent's update on the last layer of every Meta-BN auxiliary net
  instead of BN's affine parameters; the layers normalise with the source statistics, so the
  corrections are the only thing that adapts (not applicable to a model without them).
Every protocol is reset to the trained model before each (corruption, severity) cell.

For Meta-BN the protocol sets what the layers normalise with, never the reference of the shift
z (the source statistics); rows say which (evaluation/metabn_eval.py). The option
`control=zero-z|shuffle-z|static` (Meta-BN only; `static_images=N` for the static one) runs an
evaluation-only attribution control under any protocol, e.g. `none:control=zero-z`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metabn_bench.errors import UserError
from metabn_bench.evaluation import metabn_eval
from metabn_bench.registry import Registry

Forward = Callable[[Tensor], Tensor]  # [0, 1] images -> logits (normalisation included)
StaticSource = Callable[[int], dict[str, list[list[float]]]]  # N images -> static corrections
TEXT_OPTIONS = ("control",)  # protocol options whose value is a name, not a number
PROTOCOLS: Registry[type[Protocol]] = Registry("test-time protocol")


class NotApplicableError(UserError):
    """A protocol that has nothing to act on in this model (no BatchNorm2d layers to adapt,
    as with the batch-independent norms `gn`); one line, naming the protocol and the reason.
    `evaluate` records it as rows marked not applicable instead of failing."""


def require_bn_layers(name: str, model: nn.Module) -> list[nn.BatchNorm2d]:
    """The model's BatchNorm2d layers, or NotApplicableError when it has none."""
    layers = bn_layers(model)
    if not layers:
        raise NotApplicableError(f"protocol '{name}' is not applicable to this model: it has no "
                            "BatchNorm2d layers, so no batch statistics to adapt (a "
                            "batch-independent norm such as gn); evaluate it with 'none'")
    return layers


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm2d layers (and subclasses such as Meta-BN) that protocols adapt."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def batch_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of an (N, C, H, W) batch, in float32."""
    x = x.float()
    n = x.numel() // x.shape[1]
    if x.device.type == "cpu":
        # batch_norm_update_stats is about 6x faster than var_mean on the CPU (measured on a
        # channels_last 1000x16x32x32 batch: 16 ms vs 105 ms); with momentum 1 the "running"
        # buffers become the batch mean and the unbiased variance.
        mean = torch.zeros(x.shape[1], dtype=x.dtype)
        var = torch.ones(x.shape[1], dtype=x.dtype)
        torch.batch_norm_update_stats(x, mean, var, 1.0)
        return mean, var * ((n - 1) / n) if n > 1 else torch.zeros_like(var)
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    return mean, var


class Protocol:
    """`none`: evaluate the model as trained."""

    name: ClassVar[str] = "none"
    default_batch_size: ClassVar[int] = 1000

    def __init__(self, model: nn.Module, forward: Forward, **options: Any) -> None:
        if options:
            raise UserError(f"protocol '{self.name}' takes no options; got {', '.join(options)}")
        self.model = model
        self.forward = forward
        self.control: str | None = None  # a Meta-BN attribution control (make_protocol)
        # Before anything adapts the running statistics: they are the source statistics.
        metabn_eval.pin_source_statistics(model)

    def reset(self) -> None:
        """Return to the trained model (before each cell)."""
        metabn_eval.restart_control(self.model)

    def predict(self, x: Tensor) -> Tensor:
        """Logits for a test batch of [0, 1] images."""
        with torch.no_grad():
            return self.forward(x)

    def describe(self) -> dict[str, Any]:
        """Options recorded in every result row."""
        return {}

    def row_fields(self) -> dict[str, Any]:
        """Fields beyond the options that every result row carries (Meta-BN: the z reference,
        the normalisation statistics, the control, whether it is transductive)."""
        return metabn_eval.row_fields(self.model, self.name, self.describe(), self.control)


PROTOCOLS.add("none", Protocol)


@PROTOCOLS.register("bn")
class BNAdapt(Protocol):
    """Statistics adaptation (Schneider et al. 2020) with an optional prior strength N."""

    name = "bn"

    def __init__(self, model: nn.Module, forward: Forward, prior: float = 0.0) -> None:
        super().__init__(model, forward)
        if prior < 0:
            raise UserError(f"bn prior must be >= 0, got {prior}")
        self.prior = float(prior)
        self.layers = require_bn_layers(self.name, model)
        self.source = [(m.running_mean.clone(), m.running_var.clone()) for m in self.layers]
        self.handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]
        self._index = {id(m): i for i, m in enumerate(self.layers)}

    def _hook(self, module: nn.BatchNorm2d, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        p = self.prior / (self.prior + x.shape[0]) if self.prior > 0 else 0.0
        mean_src, var_src = self.source[self._index[id(module)]]
        mean, var = batch_statistics(x)
        # The module runs in eval mode and normalises with its running statistics: set them.
        module.running_mean.copy_(p * mean_src + (1 - p) * mean)
        module.running_var.copy_(p * var_src + (1 - p) * var)

    def reset(self) -> None:
        super().reset()
        for m, (mean, var) in zip(self.layers, self.source):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)

    def describe(self) -> dict[str, Any]:
        return {"prior": self.prior}


class EntropyMinimisation(Protocol):
    """Tent's update (Wang et al. 2021) on the parameters a subclass chooses: per test batch,
    `steps` Adam steps (lr 1e-3, betas 0.9/0.999, no weight decay) minimising the mean
    prediction entropy; the prediction is the forward pass before the (last) update. Model and
    optimiser return to their snapshot at every reset."""

    default_batch_size = 200

    def __init__(self, model: nn.Module, forward: Forward, lr: float = 1e-3, steps: int = 1) -> None:
        super().__init__(model, forward)
        self.lr, self.steps = float(lr), int(steps)
        params = self.adapted_parameters(model)  # first: it may find nothing to adapt
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.snapshot = copy.deepcopy(model.state_dict())
        self.opt_snapshot = copy.deepcopy(self.optimizer.state_dict())

    def adapted_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters to adapt (each once); puts the layers in their test-time mode."""
        raise NotImplementedError

    def reset(self) -> None:
        super().reset()
        self.model.load_state_dict(self.snapshot)
        self.optimizer.load_state_dict(self.opt_snapshot)

    def predict(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            for _ in range(self.steps):
                logits = self.forward(x)
                log_p = logits.float().log_softmax(dim=1)
                entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
                self.optimizer.zero_grad(set_to_none=True)
                entropy.backward()
                self.optimizer.step()
        return logits.detach()

    def describe(self) -> dict[str, Any]:
        return {"lr": self.lr, "steps": self.steps, "optimizer": "Adam(0.9, 0.999)"}


@PROTOCOLS.register("tent")
class Tent(EntropyMinimisation):
    """Entropy minimisation of BN affine parameters (Wang et al. 2021), one Adam step per batch."""

    name = "tent"

    def adapted_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """BN's gamma and beta, the layers normalising with test-batch statistics."""
        self.layers = require_bn_layers(self.name, model)
        params = []
        for m in self.layers:
            m.train()  # batch statistics (with gradients through them), as in Tent
            m.momentum = 0.0  # ... without changing the stored running statistics
            if m.affine:
                params += [m.weight, m.bias]
        # A norm layer whose per-channel affine lives around its BatchNorm2d (BGN: a per-group
        # BatchNorm without affine) exposes it through `affine_parameters()`: Tent adapts it too.
        for m in model.modules():
            if hasattr(m, "affine_parameters"):
                params += list(m.affine_parameters())
        return params


@PROTOCOLS.register("tent_aux")
class TentAux(EntropyMinimisation):
    """Meta-BN only: Tent (Wang et al. 2021) on the auxiliary nets' last layers, source stats.

    The model is otherwise as trained: the layers normalise with the source statistics, BN's
    gamma and beta and the rest of the auxiliary nets stay fixed, so the corrections alone adapt.
    """

    name = "tent_aux"

    def adapted_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The last layer of every auxiliary net (a shared hypernetwork's once); the layers
        stay in eval mode: they normalise with the source statistics, which stay as trained."""
        params = metabn_eval.auxiliary_last_layers(model)
        if not params:
            raise NotApplicableError(f"protocol '{self.name}' is not applicable to this model: "
                                     "it has no Meta-BN auxiliary nets to adapt; evaluate it "
                                     "with 'none' or 'tent'")
        return params

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "params": "auxiliary nets' last layers"}


def split_specs(text: str) -> tuple[str, ...]:
    """Protocol specs from a comma-separated list, an option staying with its protocol:
    'none,bn:prior=16,control=zero-z' -> ('none', 'bn:prior=16,control=zero-z')."""
    specs: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if specs and "=" in item and ":" not in item:
            specs[-1] += "," + item  # key=value: one more option of the protocol before it
        else:
            specs.append(item)
    return tuple(specs)


def parse_protocol(spec: str) -> tuple[str, dict[str, Any]]:
    """'bn' -> ('bn', {}); 'bn:prior=16' -> ('bn', {'prior': 16.0});
    'none:control=zero-z' -> ('none', {'control': 'zero-z'})."""
    name, _, rest = spec.partition(":")
    PROTOCOLS.get(name)
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"protocol option '{item}' must be key=value (for example bn:prior=16)")
        if key in TEXT_OPTIONS:
            metabn_eval.check_control(value)
            options[key] = value
            continue
        try:
            options[key] = float(value)
        except ValueError:
            raise UserError(f"protocol option '{item}' must have a numeric value") from None
    return name, options


def make_protocol(spec: str, model: nn.Module, forward: Forward,
                  static_source: StaticSource | None = None) -> Protocol:
    """Instantiate a protocol from 'name' or 'name:key=value,...'.

    `control` / `static_images` are Meta-BN's attribution controls, not the protocol's own
    options; the static control takes its corrections from `static_source(static_images)`.
    """
    name, options = parse_protocol(spec)
    control = options.pop("control", None)
    static_images = options.pop("static_images", None)
    if static_images is not None and control != "static":
        raise UserError("protocol option static_images is for control=static only")
    static = None
    if control is not None:
        metabn_eval.require_corrected(model, control)
    if control == "static":  # before the protocol adapts anything: the model as trained
        n = metabn_eval.DEFAULT_STATIC_IMAGES if static_images is None else static_images
        if n != int(n) or n < 1:
            raise UserError(f"static_images is {n:g}; valid: an integer >= 1")
        if static_source is None:
            raise UserError("the static Meta-BN control needs a run's training images; "
                            "use it through `evaluate`")
        static = static_source(int(n))
    try:
        protocol = PROTOCOLS.get(name)(model, forward, **options)
    except TypeError as exc:
        raise UserError(f"protocol '{name}': {exc}") from None
    if control is not None:
        metabn_eval.apply_control(model, control, static)
        protocol.control = control
    return protocol
