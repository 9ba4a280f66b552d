"""Models this toolkit did not train: a Python entry point plus a weights file, or TorchScript.

- `--entry module:function` (or `path/to/file.py:function`): the function, called without
  arguments, returns the architecture as an `nn.Module`; `--model FILE` holds its weights, read
  with `torch.load(weights_only=True)` (a file that would run code is refused). The file may be
  a plain state dict or one under a `state_dict` key, its names with or without the `module.`
  prefix of `nn.DataParallel`: the layouts in which public robustness model zoos (RobustBench,
  Croce et al., NeurIPS 2021 Datasets and Benchmarks) ship checkpoints. Weights that do not fit
  the architecture are refused with the first missing, unexpected and misshapen names.
- without `--entry`, `--model FILE` is a TorchScript file (`torch.jit.load`). Its layers are
  compiled, so the batch-adaptive protocols (bn, tent) give not-applicable rows for it.

Preprocessing is declared, never guessed: images in [0, 1] are resized to `image_size`
(bilinear, antialiased; 0 keeps the set's size), scaled to the input range (0-1 or 0-255), then
normalised as (x - mean) / std, with mean and std in the units of that range. The rows go to the
`--out` directory (eval.jsonl, per_image.npz), beside model.json (the file, its sha256, the
entry and the preprocessing) and env.json (versions and device), and name the file and its sha256.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabn_bench import fsio, provenance, runs
from metabn_bench.data.store import CorruptedSet
from metabn_bench.errors import UserError
from metabn_bench.evaluation.subject import Subject

MODEL_INFO = "model.json"
INPUT_RANGES = {"0-1": 1.0, "0-255": 255.0}
SCRIPTED = ("its layers are compiled TorchScript, which the batch-adaptive protocols cannot "
            "hook or update (give the architecture with --entry and a state dict instead)")


@dataclass(frozen=True)
class Preprocessing:
    """How [0, 1] images become the model's input (see the module docstring)."""

    input_range: str = "0-1"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    image_size: int = 0  # 0: the set's own size

    def check(self) -> None:
        """One-line errors for an unknown range, a std <= 0 or a channel count not 1 or 3."""
        if self.input_range not in INPUT_RANGES:
            raise UserError(f"--input-range is '{self.input_range}'; valid: "
                            f"{', '.join(INPUT_RANGES)}")
        for what, values in (("--mean", self.mean), ("--std", self.std)):
            if len(values) not in (1, 3):
                raise UserError(f"{what} has {len(values)} values; valid: 1 (all channels) or 3")
        if min(self.std) <= 0:
            raise UserError(f"--std has {min(self.std)}; valid: numbers > 0")
        if self.image_size < 0:
            raise UserError(f"--image-size is {self.image_size}; valid: 0 (as stored) or a size in pixels")

    def apply(self, x: Tensor) -> Tensor:
        """[0, 1] NCHW images -> the model's input."""
        size = self.image_size
        if size and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
        x = x * INPUT_RANGES[self.input_range]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class ExternalModel:
    """A model made elsewhere, as `evaluate` sees it (a Source; see evaluation/subject.py)."""

    model_file: Path
    out: Path
    entry: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    name: str = ""
    sha256: str = ""

    @property
    def out_dir(self) -> Path:
        return self.out

    def label(self) -> str:
        return self.name or self.model_file.stem

    def check(self, device: torch.device) -> None:
        """Everything that can be wrong, before any row is written; then model.json and env.json
        (versions and the device that evaluates)."""
        self.preprocessing.check()
        if not self.model_file.is_file():
            raise UserError(f"--model '{self.model_file}' does not exist; valid: a weights file "
                            "(with --entry) or a TorchScript file")
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out '{self.out}' is a file; valid: a directory (new or existing)")
        if (self.out / runs.CONFIG).is_file():  # its env.json must never be replaced
            raise UserError(f"--out '{self.out}' is a run directory of this toolkit; valid: a "
                            "directory of its own for the model's results")
        self.sha256 = fsio.sha256_file(self.model_file)
        info = self.describe()
        known = self.out / MODEL_INFO
        if known.is_file():
            try:
                old = json.loads(known.read_text())
            except (ValueError, UnicodeDecodeError):
                old = None  # unreadable: rewritten below
            if isinstance(old, dict) and old.get("model_sha256") != self.sha256:
                raise UserError(f"--out '{self.out}' holds results of another model file (sha256 "
                                f"{str(old.get('model_sha256'))[:12]}..., this one {self.sha256[:12]}...); "
                                "valid: a new directory, or the same model")
        self.load(torch.device("cpu"))  # an entry that does not import, misfit weights: now
        fsio.ensure_dir(self.out)
        fsio.write_json(known, info)
        fsio.write_json(self.out / runs.ENV, provenance.environment(device))

    def describe(self) -> dict[str, Any]:
        """What identifies the model in model.json and in every row."""
        return {"model_file": str(self.model_file), "model_sha256": self.sha256,
                "entry": self.entry or "torchscript",
                "preprocessing": asdict(self.preprocessing)}

    def load(self, device: torch.device) -> Subject:
        if self.entry:
            model = build_entry(self.entry)
            model.load_state_dict(fitting_state(model, read_state(self.model_file), self.model_file),
                                  strict=False)  # every name checked; see fitting_state
            blocked = None
        else:
            model = load_torchscript(self.model_file, device)
            blocked = SCRIPTED
        model = model.to(device).eval()
        identity = {"run_id": f"{self.label()}-{self.sha256[:12]}", "method": self.label(),
                    "arch": self.entry or "torchscript",
                    # A model from elsewhere has no dataset or seed known to this toolkit:
                    # 'external' and 0 keep the columns of every table filled and typed.
                    "dataset": "external", "seed": 0,
                    "model_file": str(self.model_file), "model_sha256": self.sha256,
                    "preprocessing": asdict(self.preprocessing)}
        return Subject(model, device, torch.contiguous_format, self.preprocessing.apply,
                       lambda: None, identity, adaptation_blocked=blocked)

    def clean_images(self, cset: CorruptedSet) -> np.ndarray:
        clean = cset.clean()
        if clean is None:
            raise UserError("the corrupted set holds no clean images (a released set); for a model "
                            "given by --model make the set with `metabn-bench corrupt`, which keeps them")
        return clean

    def num_classes(self, device: torch.device, cset: CorruptedSet) -> int:
        """The model's output width, from one forward pass on two of the set's clean images."""
        subject = self.load(device)
        images = self.clean_images(cset)[:2]
        x = torch.from_numpy(np.array(images)).to(device).permute(0, 3, 1, 2).float() / 255
        try:
            with torch.no_grad():
                out = subject.model(subject.normalize(x))
        except Exception as exc:  # the user's model: any failure is theirs to fix, one line
            raise UserError(f"the model of '{self.model_file}' fails on a batch of the set's "
                            f"images of shape {tuple(x.shape)} after preprocessing ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); check "
                            "--image-size, --mean and --std") from None
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise UserError(f"the model of '{self.model_file}' must return logits of shape "
                            f"(batch, classes); it returned {type(out).__name__}"
                            + (f" of shape {tuple(out.shape)}" if isinstance(out, Tensor) else ""))
        return int(out.shape[1])


def build_entry(entry: str) -> nn.Module:
    """Call `module:function` (or `file.py:function`) and check that it gives an nn.Module."""
    module_name, sep, fn_name = entry.rpartition(":")
    if not sep or not module_name or not fn_name.isidentifier():
        raise UserError(f"--entry is '{entry}'; valid: module:function or path/to/file.py:function")
    module = _import(module_name, entry)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(f"--entry '{entry}': module '{module_name}' has no function '{fn_name}'")
    try:
        model = fn()
    except Exception as exc:  # the user's code
        raise UserError(f"--entry '{entry}' failed when called without arguments "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--entry '{entry}' returned {type(model).__name__}; valid: a function "
                        "that returns a torch.nn.Module")
    return model


def _import(module_name: str, entry: str) -> Any:
    """The module of an entry point: a .py file by path, else by name (the working directory
    searched first, as `python -m` does, so that a user's own module is found)."""
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"--entry '{entry}': file '{path}' does not exist")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise UserError(f"--entry '{entry}': '{path}' is not a Python module")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        sys.path.insert(0, str(Path.cwd()))
        try:
            return importlib.import_module(module_name)
        finally:
            sys.path.remove(str(Path.cwd()))
    except UserError:
        raise
    except Exception as exc:  # ImportError, or anything the module raises while importing
        raise UserError(f"--entry '{entry}': module '{module_name}' does not import "
                        f"({type(exc).__name__}: {exc}); valid: an importable module or a "
                        "path/to/file.py") from None


def read_state(path: Path) -> dict[str, Tensor]:
    """A weights file as a flat state dict: unwrapped from a `state_dict` key, the `module.`
    prefix of nn.DataParallel removed; loaded with weights_only=True."""
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused or unreadable: never retried without weights_only
        why = ("it holds objects other than tensors (refused: loading it could run code)"
               if "weights_only" in str(exc) or "nsupported" in str(exc)
               else "it is not a torch weights file, or it is truncated")
        raise UserError(f"cannot load --model '{path}': {why}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise UserError(f"--model '{path}' holds no state dict; valid: a mapping of parameter "
                        "names to tensors, possibly under a 'state_dict' key")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def fitting_state(model: nn.Module, state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """`state` when it fits `model` name for name and shape for shape, else a one-line error
    naming the first mismatches. Only BatchNorm's `num_batches_tracked` counters may be absent
    (older checkpoints lack them; they do not change a prediction)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = [f"{what} {_first(items)}" for what, items in (
        ("missing keys", missing), ("unexpected keys", unexpected),
        ("shape mismatches (file vs model)", shapes)) if items]
    if parts:
        raise UserError(f"the weights in '{path}' do not fit the architecture: {'; '.join(parts)}")
    return state


def _first(items: list[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (f" (+{len(items) - k} more)" if len(items) > k else "")


def load_torchscript(path: Path, device: torch.device) -> nn.Module:
    """A TorchScript file, or a one-line error that says what else --model can be."""
    try:
        with warnings.catch_warnings():  # torch's deprecation note: the format is the user's choice
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path), map_location=device)
    except Exception:  # not a TorchScript archive
        raise UserError(f"--model '{path}' is not a TorchScript file; for a state dict, give "
                        "its architecture with --entry module:function") from None


def source_from_options(run_dir: Path | None, model: Path | None, entry: str | None,
                        out: Path | None, preprocessing: Preprocessing | None,
                        name: str = "") -> Path | ExternalModel:
    """What `evaluate` was asked to evaluate: RUN_DIR, or --model (with --out); one-line errors
    for neither, both, or options that belong to the other kind."""
    if run_dir is not None and model is not None:
        raise UserError("both RUN_DIR and --model were given; valid: a run directory of this "
                        "toolkit, or --model FILE --out DIR for a model made elsewhere")
    if run_dir is not None:
        extra = [o for o, v in (("--entry", entry), ("--out", out), ("--name", name or None),
                                ("--input-range/--mean/--std/--image-size", preprocessing))
                 if v is not None]
        if extra:
            raise UserError(f"{extra[0]} applies to --model only; a run directory knows its own "
                            "architecture, preprocessing and output")
        return run_dir
    if model is None:
        raise UserError("nothing to evaluate; valid: RUN_DIR (a finished run), or --model FILE "
                        "[--entry module:function] --out DIR")
    if out is None:
        raise UserError("--model needs --out DIR, the directory that receives its result rows")
    return ExternalModel(model, out, entry, preprocessing or Preprocessing(), name)
