"""Diagnostics of a trained Meta-BN run: what its auxiliary nets do on clean and shifted data.

- Per layer: how far the inputs' statistics move (mean |z|), the size of the corrections
  (mean |dg|, |db|) on clean images and on each corruption, and how much they respond to the
  shift (mean |dg(corrupted) - dg(clean)| over the same images).
- Whole model: top-1 error with the corrections on and switched off (bound 0 at test time),
  on clean images and on every corruption: the auxiliary nets' own contribution.

    metabn-bench analysis diagnostics RUN_DIR CORRUPTED_DIR [--severity 3] [--n 500] [--json F]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metabn_bench.data.loader import to_float
from metabn_bench.data.store import open_set
from metabn_bench.device import resolve_device
from metabn_bench.errors import UserError
from metabn_bench.evaluation.trained import load_trained
from metabn_bench.methods.metabn import is_meta_bn_method
from metabn_bench.models.metabn import corrected_layers, feature_sizes, meta_bn_layers
from metabn_bench.runs import is_finished, load_config


def load_run(run_dir: Path, device: torch.device) -> tuple[Any, torch.nn.Module]:
    """(method, model in eval mode) of a finished metabn run."""
    if not is_meta_bn_method(load_config(run_dir).method) or not is_finished(run_dir):
        raise UserError(f"'{run_dir}' is not a finished Meta-BN run (metabn or augmix_metabn)")
    run = load_trained(run_dir, device, channels_last=False)
    return run.method, run.model


@contextlib.contextmanager
def corrections_off(model: torch.nn.Module) -> Iterator[None]:
    """Switch every auxiliary net's corrections off (bound 0): the plain BN backbone."""
    layers = corrected_layers(model)
    bounds = [m.bound for m in layers]
    for m in layers:
        m.bound = 0.0
    try:
        yield
    finally:
        for m, b in zip(layers, bounds):
            m.bound = b


def layer_statistics(method: Any, model: torch.nn.Module, images: np.ndarray,
                     batch_size: int = 250) -> dict[str, list[np.ndarray]]:
    """Per corrected layer and image: mean |z|, mean |dg|, mean |db| and the raw dg, db."""
    layers = corrected_layers(model)
    store: dict[int, dict[str, list[torch.Tensor]]] = {id(m): {"z": [], "dg": [], "db": []}
                                                       for m in layers}

    def hook(module: Any, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        rec = store[id(module)]
        rec["z"].append(module.relative_statistics(args[0]).abs().mean(1).cpu())
        rec["dg"].append(module.last_corrections[0].cpu())
        rec["db"].append(module.last_corrections[1].cpu())

    handles = [m.register_forward_hook(hook) for m in layers]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = to_float(torch.from_numpy(np.array(images[start:start + batch_size])).to(device))
                model(method.normalize(x))
    finally:
        for h in handles:
            h.remove()
    return {key: [torch.cat(store[id(m)][key]).numpy() for m in layers]
            for key in ("z", "dg", "db")}  # per layer: (images,) or (images, channels)


def error_rate(method: Any, model: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
               batch_size: int = 250) -> float:
    """Top-1 error (%) of the model in its current configuration."""
    device = next(model.parameters()).device
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_float(torch.from_numpy(np.array(images[start:start + batch_size])).to(device))
            pred = model(method.normalize(x)).argmax(1).cpu().numpy()
            wrong += int((pred != labels[start:start + batch_size]).sum())
    return 100.0 * wrong / len(images)


def diagnose(run_dir: Path, corrupted: Path, severity: int = 3, n: int = 500,
             device: str = "cpu") -> dict[str, Any]:
    """Per-layer correction sizes and errors with corrections on/off, clean vs each corruption."""
    dev = resolve_device(device)
    method, model = load_run(run_dir, dev)
    cset = open_set(corrupted, verify=False)
    clean = cset.clean()
    if clean is None:
        raise UserError(f"corrupted set '{corrupted}' stores no clean images")
    n = min(n, cset.n)
    labels = np.asarray(cset.labels[:n])
    sizes = dict(zip(map(id, meta_bn_layers(model)), feature_sizes(model)))
    names = {id(m): name for name, m in model.named_modules()}
    layers = corrected_layers(model)
    cells = {"clean": clean[:n]} | {c: cset.cell(c, severity)[:n] for c in cset.corruptions}
    stats = {name: layer_statistics(method, model, imgs) for name, imgs in cells.items()}
    base = stats["clean"]
    per_layer = []
    for i, m in enumerate(layers):
        row: dict[str, Any] = {"layer": names[id(m)], "channels": m.num_features,
                               "feature_size": sizes[id(m)]}
        for name, st in stats.items():
            row[f"{name}/z"] = float(st["z"][i].mean())
            row[f"{name}/dg"] = float(np.abs(st["dg"][i]).mean())
            row[f"{name}/db"] = float(np.abs(st["db"][i]).mean())
            if name != "clean":
                row[f"{name}/dg_shift"] = float(np.abs(st["dg"][i] - base["dg"][i]).mean())
                row[f"{name}/db_shift"] = float(np.abs(st["db"][i] - base["db"][i]).mean())
        per_layer.append(row)
    errors = {}
    for name, imgs in cells.items():
        on = error_rate(method, model, imgs, labels)
        with corrections_off(model):
            off = error_rate(method, model, imgs, labels)
        errors[name] = {"corrections_on": on, "corrections_off": off}
    return {"run": str(run_dir), "corrupted_set": str(corrupted), "severity": severity, "n": n,
            "data_source": cset.source, "per_layer": per_layer, "errors": errors}
