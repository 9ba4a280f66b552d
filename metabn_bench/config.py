"""Typed configuration: frozen dataclasses, YAML presets, `--set key=value` overrides.

Precedence, lowest first: dataclass defaults < method defaults (its Hparams) < preset or
`--config` file < `--set` overrides. An unknown key anywhere is a UserError that lists the
valid keys, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from metabn_bench.errors import UserError
from metabn_bench.fsio import sha256_text

T = TypeVar("T")

PROTOCOL_DEFAULT: tuple[str, ...] = ("none",)


@dataclass(frozen=True)
class DataConfig:
    """Which data set, how much of it, and the recipe's input pipeline."""

    dataset: str = "synthetic"  # SPEC: synthetic, cifar10, cifar100, tinyimagenet, npy:DIR, folder:DIR
    data_root: str = "data"  # where cifar10 / cifar100 / tinyimagenet live or are downloaded to
    label: str = ""  # provenance label of the data source; empty = derived from the spec
    train_size: int = 0  # use the first N training images (0 = all)
    crop_padding: int = 4  # random crop of the image size from a zero-padded image (pixels; 0 = off)
    hflip: bool = True  # random horizontal flip
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # per-channel normalisation of [0,1] inputs
    std: tuple[float, ...] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class OptimConfig:
    """SGD with Nesterov momentum and per-step cosine decay (the AugMix CIFAR recipe)."""

    lr: float = 0.1  # peak learning rate
    lr_min: float = 1e-6  # final learning rate of the cosine schedule
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128  # training images per step
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr before the cosine decay (0 = none)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (hashed into the run directory name)."""

    method: str = "vanilla"
    arch: str = "wrn40_2"
    epochs: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda (not part of the run's identity)
    amp: bool = True  # mixed precision on CUDA only
    channels_last: bool = True  # NHWC memory format (CUDA and CPU: faster on both, measured)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    hparams: Mapping[str, Any] = field(default_factory=dict)  # the method's own options


@dataclass(frozen=True)
class CorruptConfig:
    """How the corrupted test set is made."""

    preset: str = "auto"  # parameter table: auto | cifar | tinyimagenet | imagenet
    corruptions: tuple[str, ...] = ()  # empty = every implemented common corruption
    extras: bool = False  # also make the 4 extra (validation) corruptions
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    seed: int = 0
    n_test: int = 0  # corrupt the first N test images (0 = all)
    batch_size: int = 500  # images per batch (does not change the output)
    backend: str = "torch"  # torch | imagecorruptions
    benchmark: str = "c"  # c (-C) | c-bar (CIFAR-10-C-bar / ImageNet-C-bar, Mintun et al. 2021)


@dataclass(frozen=True)
class EvalConfig:
    """How trained models are evaluated."""

    protocols: tuple[str, ...] = PROTOCOL_DEFAULT  # test-time protocols: none, bn, tent
    batch_size: int = 0  # test batch size; 0 = the protocol's default
    extras: bool = False  # also evaluate the 4 extra corruptions (never in the headline mCE)


@dataclass(frozen=True)
class SuiteConfig:
    """A preset: data set, methods, seeds, recipe, corrupted set and test-time protocols."""

    name: str = "custom"
    description: str = ""
    methods: tuple[str, ...] = ("vanilla",)
    seeds: tuple[int, ...] = (0,)
    train: TrainConfig = field(default_factory=TrainConfig)
    method_hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    corrupt: CorruptConfig = field(default_factory=CorruptConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # method -> its own seeds (e.g. more seeds for the rows a table leans on); others use `seeds`
    method_seeds: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def seeds_for(self, method: str) -> tuple[int, ...]:
        """The seeds `method` is trained with: its `method_seeds` entry, else `seeds`."""
        return tuple(self.method_seeds.get(method, self.seeds))


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with strict keys and types


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise UserError(f"config key '{where}' must be a mapping of {_type_name(tp)} keys")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except UserError:
                continue
        raise UserError(f"config key '{where}' has an invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]  # a scalar for a list-valued key means a one-element list
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(v, inner, where) for v in value)
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise UserError(f"config key '{where}' must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and typing.get_origin(args[1]) is tuple:  # e.g. method -> seeds
            return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{where}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{where}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key '{where}' must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types are UserErrors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints or key not in names:
            raise UserError(f"unknown config key '{path}'; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A plain JSON-ready structure (tuples become lists) of a config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: `update` wins; nested mappings merge key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["optim.lr=0.05", "epochs=3"]` -> nested dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set expects key=value (for example optim.lr=0.05), got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set key '{key}' conflicts with another --set")
        node[leaf] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file (yaml.safe_load); a clear error for a missing/invalid file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"config file '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of keys, not {type(data).__name__}")
    return data


def preset_names() -> list[str]:
    """Names of the presets shipped in the package."""
    files = resources.files("metabn_bench") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a shipped preset, or of a YAML file if `name` is a path."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return load_yaml(name)
    if name not in preset_names():
        raise UserError(f"unknown preset '{name}'; valid: {', '.join(preset_names())}")
    text = (resources.files("metabn_bench") / "presets" / f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def load_preset(name: str, overrides: Iterable[str] = ()) -> SuiteConfig:
    """A SuiteConfig from a shipped preset (or YAML path) with `--set` overrides applied."""
    data = merge(preset_dict(name), parse_overrides(overrides))
    data.setdefault("name", Path(name).stem if name.endswith((".yaml", ".yml")) else name)
    return from_dict(SuiteConfig, data)


def build_train_config(
    base: Mapping[str, Any] | None = None,
    config_file: str | None = None,
    overrides: Iterable[str] = (),
) -> TrainConfig:
    """TrainConfig from defaults < `base` < a YAML file < `--set` overrides."""
    data: dict[str, Any] = dict(base or {})
    if config_file:
        data = merge(data, load_yaml(config_file))
    data = merge(data, parse_overrides(overrides))
    return from_dict(TrainConfig, data)  # checked by `train` before anything is written


def replace(cfg: T, **changes: Any) -> T:
    """dataclasses.replace, re-exported for callers."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


# Keys that change how fast a run goes but not what it computes; they stay out of the hash.
_NOT_IDENTITY = ("device",)
# Keys added after runs were published, with the value every earlier run had: at that value
# they stay out of the hash, so earlier run directories and committed results keep their names.
_ADDED_KEYS = {("optim", "warmup_epochs"): 0.0,
               ("hparams", "meta_test_stats"): "meta_train"}  # Meta-BN's, a training control


def identity(cfg: TrainConfig) -> dict[str, Any]:
    """The part of a resolved TrainConfig that defines the experiment."""
    data = to_dict(cfg)
    for key in _NOT_IDENTITY:
        data.pop(key, None)
    for (section, key), old_value in _ADDED_KEYS.items():
        if data.get(section, {}).get(key) == old_value:
            del data[section][key]
    return data


def config_hash(cfg: TrainConfig, length: int = 10) -> str:
    """A short stable hash of the run's identity (used in run directory names)."""
    return sha256_text(json.dumps(identity(cfg), sort_keys=True))[:length]
