"""Class activation maps of trained runs, clean and corrupted, methods side by side in one PNG.

- CAM (Zhou et al., CVPR 2016, "Learning Deep Features for Discriminative Localization"): for a
  network ending in global average pooling + a linear layer, the map of class c is
  sum_k W[c, k] * A_k, with A the last feature map (`forward_features`).
- Grad-CAM (Selvaraju et al., ICCV 2017): weights alpha_k = spatial mean of d score_c / d A_k,
  map = ReLU(sum_k alpha_k * A_k); A is the last feature map, or the output of any module named
  with `layer`. On the last feature map of a pooling + linear head, alpha_k = W[c, k] / (H W),
  so Grad-CAM there is ReLU(CAM) up to scale; an earlier layer gives a different, finer map.

Every map is upsampled bilinearly to the image size and scaled to [0, 1] per image. The figure
has one row per (image, condition) and one column per run (and map kind); each panel's title
gives the run's prediction. The PNG's metadata records runs, corrupted set and choices.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, PngImagePlugin
from torch import Tensor, nn

from metabn_bench import fsio
from metabn_bench.corruptions import names as cnames
from metabn_bench.data.loader import to_float
from metabn_bench.data.store import CorruptedSet, open_set
from metabn_bench.device import resolve_device
from metabn_bench.errors import UserError, one_of
from metabn_bench.evaluation.evaluate import clean_images
from metabn_bench.methods import build_method
from metabn_bench.models import Classifier
from metabn_bench.training.loop import DONE, MODEL, load_config, load_weights

KINDS = ("gradcam", "cam", "both")
TARGETS = ("label", "predicted")
DEFAULT_CORRUPTIONS = ("gaussian_noise", "defocus_blur")


@dataclass
class LoadedRun:
    """A trained model rebuilt from its run directory, in its test-time configuration."""

    run_dir: Path
    label: str
    model: Classifier
    method: Any
    classes: list[str]


def load_run(run_dir: str | Path, device: torch.device) -> LoadedRun:
    """Rebuild a finished run's model (weights_only load) on `device`, in eval mode."""
    run_dir = Path(run_dir)
    if not (run_dir / DONE).exists():
        raise UserError(f"run '{run_dir}' has not finished training (no '{DONE}' marker)")
    cfg = load_config(run_dir)
    classes = [str(c) for c in json.loads((run_dir / "env.json").read_text())["data"]["classes"]]
    method = build_method(cfg, len(classes), device)
    model = method.build_model().to(device)
    model.load_state_dict(load_weights(run_dir / MODEL, device))
    method.prepare_eval(model)
    return LoadedRun(run_dir, f"{cfg.method} (seed {cfg.seed})", model, method, classes)


def _has_linear_head(model: nn.Module) -> bool:
    return (isinstance(model, Classifier) and isinstance(model.classifier, nn.Linear)
            and type(model).forward is Classifier.forward)


def class_activation_map(model: Classifier, x: Tensor, targets: Tensor) -> Tensor:
    """CAM (N, h, w) of class `targets` for normalised inputs x; needs a pooling + linear head."""
    if not _has_linear_head(model):
        raise UserError(f"{type(model).__name__} does not end in pooling + linear; use Grad-CAM")
    with torch.no_grad():
        features = model.forward_features(x)
        weights = model.classifier.weight[targets]  # (N, C)
        return torch.einsum("nc,nchw->nhw", weights.float(), features.float())


def grad_cam(model: Classifier, x: Tensor, targets: Tensor, layer: str | None = None) -> Tensor:
    """Grad-CAM (N, h, w) at the last feature map or at module `layer` (a named module)."""
    captured: dict[str, Tensor] = {}
    handle = None
    if layer:
        modules = dict(model.named_modules())
        if layer not in modules:
            raise one_of("layer", layer, [n for n in modules if n][:40])

        def keep(_m: nn.Module, _args: Any, out: Tensor) -> None:
            captured["a"] = out

        handle = modules[layer].register_forward_hook(keep)
    try:
        with torch.enable_grad():
            if layer:
                logits = model(x)
            else:
                captured["a"] = model.forward_features(x)
                logits = model.classifier(torch.flatten(captured["a"].mean(dim=(2, 3)), 1))
            score = logits.gather(1, targets[:, None]).sum()
            (grads,) = torch.autograd.grad(score, captured["a"])
    finally:
        if handle is not None:
            handle.remove()
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * captured["a"].detach().float()).sum(dim=1))


def _scale(maps: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Upsample to the image size and scale each map to [0, 1]."""
    up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    span = (up.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-12)
    return ((up - low) / span).cpu().numpy()


def pick_images(labels: np.ndarray, n: int) -> list[int]:
    """The first image of each of the first `n` classes present (deterministic, class-spread)."""
    out: list[int] = []
    for cls in np.unique(labels)[:n]:
        out.append(int(np.flatnonzero(labels == cls)[0]))
    return sorted(out)


def _conditions(cset: CorruptedSet, corruptions: tuple[str, ...], severity: int) -> list[str]:
    if severity not in cset.severities:
        raise UserError(f"severity {severity} is not in the corrupted set; valid: "
                        f"{', '.join(map(str, cset.severities))}")
    chosen = corruptions or tuple(c for c in DEFAULT_CORRUPTIONS if c in cset.corruptions) or tuple(
        cnames.canonical_order(list(cset.corruptions))[:2])
    for c in chosen:
        if c not in cset.corruptions:
            raise one_of("corruption in this set", c, list(cset.corruptions))
    return ["clean", *chosen]


@dataclass
class CamRequest:
    """What to draw."""

    corruptions: tuple[str, ...] = ()
    severity: int = 3
    images: tuple[int, ...] = ()
    n_images: int = 4
    kind: str = "gradcam"
    target: str = "label"
    layer: str | None = None
    dpi: int = 100


def cam_grid(run_dirs: list[str | Path], corrupted: str | Path, out: str | Path,
             request: CamRequest | None = None, device: str = "auto") -> Path:
    """Draw the CAM grid of `run_dirs` on images of the corrupted set into the PNG `out`."""
    req = request or CamRequest()
    if req.kind not in KINDS:
        raise one_of("CAM kind", req.kind, KINDS)
    if req.target not in TARGETS:
        raise one_of("CAM target", req.target, TARGETS)
    if not run_dirs:
        raise UserError("cam needs at least one run directory")
    dev = resolve_device(device)
    runs = [load_run(r, dev) for r in run_dirs]
    labels_seen = [r.label for r in runs]
    for r in runs:
        if labels_seen.count(r.label) > 1:  # same method and seed twice: name the directory
            r.label = f"{r.label}\n{r.run_dir.name}"
    cset = open_set(corrupted, verify=False)
    indices = list(req.images) or pick_images(cset.labels, req.n_images)
    if not indices or max(indices) >= cset.n or min(indices) < 0:
        raise UserError(f"image indices must be in 0..{cset.n - 1}, got {indices}")
    conditions = _conditions(cset, req.corruptions, req.severity)
    kinds = ["gradcam", "cam"] if req.kind == "both" else [req.kind]
    clean = clean_images(load_config(runs[0].run_dir), cset)
    images = {c: np.array((clean if c == "clean" else cset.cell(c, req.severity))[indices])
              for c in conditions}
    labels = torch.from_numpy(np.array(cset.labels[indices], dtype=np.int64)).to(dev)
    panels = {}  # (condition, run index, kind) -> (maps, predictions)
    for cond, batch in images.items():
        x = to_float(torch.from_numpy(batch).to(dev))
        for i, run in enumerate(runs):
            xin = run.method.normalize(x)
            with torch.no_grad():
                pred = run.model(xin).argmax(1)
            targets = labels if req.target == "label" else pred
            for kind in kinds:
                maps = (grad_cam(run.model, xin, targets, req.layer) if kind == "gradcam"
                        else class_activation_map(run.model, xin, targets))
                panels[(cond, i, kind)] = (_scale(maps, batch.shape[1:3]), pred.cpu().numpy())
    meta = {"dpi": req.dpi, "runs": [str(r.run_dir) for r in runs], "corrupted_set": cset.set_id,
            "data_source": cset.source, "images": indices, "conditions": conditions,
            "severity": req.severity, "kinds": kinds, "target": req.target, "layer": req.layer}
    return _draw(runs, images, labels.cpu().numpy(), panels, kinds, meta, Path(out))


def _draw(runs: list[LoadedRun], images: dict[str, np.ndarray], labels: np.ndarray,
          panels: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]], kinds: list[str],
          meta: dict[str, Any], out: Path) -> Path:
    classes = runs[0].classes
    conditions = list(images)
    n_img = len(labels)
    cols = 1 + len(runs) * len(kinds)
    height = 1.5 * n_img * len(conditions) + 0.7
    fig = Figure(figsize=(max(1.45 * cols, 4.0), height))
    grid = fig.add_gridspec(n_img * len(conditions), cols, hspace=0.45, wspace=0.08,
                            top=1 - 0.75 / height, bottom=0.1 / height, left=0.02, right=0.98)
    sev = meta["severity"]
    for j in range(n_img):
        for k, cond in enumerate(conditions):
            r = j * len(conditions) + k
            ax = fig.add_subplot(grid[r, 0])
            ax.imshow(images[cond][j], interpolation="nearest")
            name = "clean" if cond == "clean" else f"{cond.replace('_', ' ')} s{sev}"
            ax.set_title(f"{name}\ntrue: {classes[labels[j]]}", fontsize=6)
            ax.axis("off")
            for i, run in enumerate(runs):
                for q, kind in enumerate(kinds):
                    maps, pred = panels[(cond, i, kind)]
                    ax = fig.add_subplot(grid[r, 1 + i * len(kinds) + q])
                    ax.imshow(images[cond][j], interpolation="nearest")
                    ax.imshow(maps[j], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
                    mark = "ok" if pred[j] == labels[j] else "wrong"
                    kind_name = "Grad-CAM" if kind == "gradcam" else "CAM"
                    head = f"{run.label}\n{kind_name}\n" if r == 0 else ""  # column header
                    ax.set_title(f"{head}pred {classes[pred[j]]} ({mark})", fontsize=6)
                    ax.axis("off")
    fig.suptitle(f"Class activation maps ({meta['target']} class)\ndata: {meta['data_source']}; "
                 f"set {meta['corrupted_set']}", fontsize=6, y=1 - 0.08 / height)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=meta["dpi"], metadata={"Software": None})
    # A 256-colour palette keeps the file about three times smaller with no visible loss.
    with Image.open(buffer) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", json.dumps(meta))
    with fsio.atomic_open(out, "wb") as fh:
        small.save(fh, format="PNG", optimize=True, pnginfo=info)
    return out
