"""What each test-time protocol means for Meta-BN, the fields its rows carry, and the
evaluation-only controls (models/metabn_control.py) with the static corrections they need.

Meta-BN's layer has two sets of statistics at test time (models/metabn.py): what it
normalises with, and the reference its auxiliary nets measure the shift z against. The
reference is always the source statistics (the running statistics at the end of training,
pinned when a protocol is built); the protocols differ in what normalises:

- `none`: the source statistics (the model as trained);
- `bn`: the test batch's statistics (Schneider et al., NeurIPS 2020);
- `bn:prior=N`: N / (N + n) source + n / (N + n) test batch, for a test batch of n;
- `tent`: the test batch's statistics, with the BN affine parameters adapted by entropy
  minimisation (Wang et al., ICLR 2021); the auxiliary nets are not adapted;
- `tent_aux`: the source statistics; Tent's entropy minimisation adapts the last layer of
  every auxiliary net instead (and nothing else), so the corrections alone adapt.

So under `bn` and `tent` the corrections still see the shift of the test images from the
training distribution, which normalising with the batch's statistics removes from the features.
With `stats_source=batch` z is the test batch's, so every protocol, `none` included, is
transductive (a prediction depends on the other images of its batch); with `instance` only
`bn`, `tent` and `tent_aux` are (the last through the updates made on the earlier batches of
its cell).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metabn_bench import fsio, provenance
from metabn_bench.data.loader import batches, to_float
from metabn_bench.errors import UserError
from metabn_bench.models.metabn import corrected_layers, meta_bn_layers
from metabn_bench.models.metabn_control import CONTROLS, CorrectionControl

Z_REFERENCE = "source"  # the running statistics at the end of training, pinned
STATIC_FILE = "metabn_static-n{n}.json"  # in the run directory
DEFAULT_STATIC_IMAGES = 2000
SHUFFLE_SEED = 0  # the shuffle-z generator's seed, restarted before every cell


def pin_source_statistics(model: nn.Module) -> None:
    """Pin every Meta-BN layer's z reference to its running statistics as they are now (the
    source statistics, once training has ended); a layer already pinned keeps its reference,
    so a protocol that later changes the running statistics never moves it."""
    for m in meta_bn_layers(model):
        if m.source_mean is None or m.source_var is None:
            m.source_mean = m.running_mean.detach().clone()
            m.source_var = m.running_var.detach().clone()


def normalisation_of(protocol: str, prior: float = 0.0) -> str:
    """What a protocol normalises Meta-BN's features with (see the module docstring)."""
    if protocol in ("none", "tent_aux"):
        return "source"
    if protocol == "bn" and prior > 0:
        return f"prior-mixed (N={prior:g}): N/(N+n) source + n/(N+n) test batch"
    if protocol in ("bn", "tent"):
        return "test batch"
    raise ValueError(f"no Meta-BN meaning defined for protocol {protocol!r}")


def row_fields(model: nn.Module, protocol: str, options: dict[str, Any],
               control: str | None) -> dict[str, Any]:
    """The fields a result row of a model with corrected Meta-BN layers carries: the z
    reference, the normalisation statistics, the statistics source, the control, and whether
    the prediction is transductive; nothing for any other model."""
    layers = corrected_layers(model)
    if not layers:
        return {}
    stats_source = layers[0].stats_source
    return {
        "transductive": protocol != "none" or stats_source == "batch",
        "metabn": {"z_reference": Z_REFERENCE,
                   "normalisation": normalisation_of(protocol, float(options.get("prior", 0.0))),
                   "stats_source": stats_source, "control": control or "none"},
    }


def auxiliary_last_layers(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the last layer of every auxiliary net, each once (a shared
    hypernetwork's appear once): what `tent_aux` adapts. Empty without auxiliary nets."""
    seen: dict[int, nn.Parameter] = {}
    for layer in corrected_layers(model):
        for p in layer.aux.last_layer_parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def check_control(control: str) -> None:
    """A known control name, or a one-line UserError."""
    if control not in CONTROLS:
        raise UserError(f"unknown Meta-BN control '{control}'; valid: {', '.join(CONTROLS)}")


def require_corrected(model: nn.Module, control: str) -> list[Any]:
    """The corrected Meta-BN layers `control` acts on, or a one-line UserError."""
    check_control(control)
    layers = corrected_layers(model)
    if not layers:
        raise UserError(f"the Meta-BN control '{control}' needs a model with Meta-BN auxiliary "
                        "nets; this run has none")
    return layers


def apply_control(model: nn.Module, control: str,
                  static: dict[str, list[list[float]]] | None = None) -> None:
    """Put `control` on every corrected Meta-BN layer (the `static` one needs the per-layer
    mean corrections, `static_corrections`' 'layers'). A model without auxiliary nets has
    nothing to control: a one-line UserError."""
    layers = require_corrected(model, control)
    generator = torch.Generator().manual_seed(SHUFFLE_SEED) if control == "shuffle-z" else None
    if control == "static" and (static is None or len(static) != len(layers)):
        raise UserError("the static Meta-BN corrections do not fit this model's layers")
    for i, m in enumerate(layers):
        means = None
        if control == "static":
            assert static is not None
            dg, db = (torch.tensor(v, dtype=m.weight.dtype, device=m.weight.device)
                      for v in static[str(i)])
            means = (dg, db)
        m.control = CorrectionControl(control, generator, means)


def restart_control(model: nn.Module) -> None:
    """Restart the shuffle-z generator (before every cell, so a cell is reproducible alone)."""
    for m in corrected_layers(model):
        if m.control is not None and m.control.generator is not None:
            m.control.generator.manual_seed(SHUFFLE_SEED)
            return  # one generator shared by every layer


def mean_corrections(model: nn.Module, forward: Any, images: np.ndarray,
                     device: torch.device, fmt: torch.memory_format,
                     batch_size: int = 500) -> dict[str, list[list[float]]]:
    """Per corrected layer (by index), the mean (dg, db) over `images` (uint8 NHWC, clean), with
    the model as trained: eval mode, source statistics, no control. Accumulated in float64."""
    layers = corrected_layers(model)
    sums = [[torch.zeros(m.num_features, dtype=torch.float64) for _ in range(2)] for m in layers]
    saved = [m.control for m in layers]
    was_training = model.training
    model.eval()
    try:
        for m in layers:
            m.control = None
        with torch.no_grad():
            for batch in batches(images, batch_size, device):
                forward(to_float(batch, fmt))
                for s, m in zip(sums, layers):
                    assert m.last_corrections is not None
                    for k in range(2):
                        s[k] += m.last_corrections[k].double().sum(0).cpu()
    finally:
        for m, c in zip(layers, saved):
            m.control = c
        model.train(was_training)
    n = images.shape[0]
    return {str(i): [(s[0] / n).tolist(), (s[1] / n).tolist()] for i, s in enumerate(sums)}


def static_corrections(run_dir: Path, model: nn.Module, forward: Any, cfg: Any,
                       device: torch.device, fmt: torch.memory_format,
                       n_images: int) -> dict[str, list[list[float]]]:
    """The static control's corrections for a run: loaded from RUN_DIR/metabn_static-n<N>.json
    when present, else computed over N clean training images (the class-balanced subset
    `load_split` gives) and written there with provenance."""
    from metabn_bench.data.specs import load_split

    if n_images < 1:
        raise UserError(f"static_images is {n_images}; valid: an integer >= 1")
    path = Path(run_dir) / STATIC_FILE.format(n=n_images)
    if path.is_file():
        import json

        return json.loads(path.read_text())["layers"]
    data = load_split(cfg.data.dataset, "train", cfg.data.data_root, n_images, cfg.data.label)
    layers = mean_corrections(model, forward, data.images, device, fmt)
    fsio.write_json(path, {
        "what": "Meta-BN static control: mean (dg, db) per corrected layer and channel over "
                "clean training images, the model as trained (source statistics)",
        "run_id": Path(run_dir).name, "images": len(data), "split": "train",
        "data_source": data.source, "provenance": provenance.environment(device),
        "layers": layers})
    return layers

