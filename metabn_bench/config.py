"""Typed configuration: frozen dataclasses, YAML presets, `--set key=value` overrides.

Precedence, lowest first: dataclass defaults < method defaults (its Hparams) < preset or
`--config` file < `--set` overrides. An unknown key anywhere is a UserError that lists the
valid keys, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import math
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


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (hashed into the run directory name)."""

    method: str = "vanilla"
    arch: str = "wrn40_2"
    epochs: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda (not part of the run's identity)
    amp: bool = True  # mixed precision on CUDA only
    channels_last: bool = True  # NHWC memory format on CUDA only
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
    cfg = from_dict(TrainConfig, data)
    check_train_config(cfg)
    return cfg


def replace(cfg: T, **changes: Any) -> T:
    """dataclasses.replace, re-exported for callers."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


# Keys that change how fast a run goes but not what it computes; they stay out of the hash.
_NOT_IDENTITY = ("device",)


def identity(cfg: TrainConfig) -> dict[str, Any]:
    """The part of a resolved TrainConfig that defines the experiment."""
    data = to_dict(cfg)
    for key in _NOT_IDENTITY:
        data.pop(key, None)
    return data


def config_hash(cfg: TrainConfig, length: int = 10) -> str:
    """A short stable hash of the run's identity (used in run directory names)."""
    return sha256_text(json.dumps(identity(cfg), sort_keys=True))[:length]


# ---------------------------------------------------------------------------------------------
# Range and name checks: every number and name a command will use, checked before any work
# (or any file) is done, each failure one UserError naming the value and what is valid.


def check_int(name: str, value: int, low: int, meaning: str = "") -> None:
    """UserError unless `value` >= `low` (`meaning` says what the lowest value means)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        valid = f"an integer >= {low}" + (f" ({meaning})" if meaning else "")
        raise UserError(f"{name} is {value!r}; valid: {valid}")


def check_float(name: str, value: float, low: float, inclusive: bool = True) -> None:
    """UserError unless `value` is finite and >= `low` (or > `low` when not inclusive)."""
    ok = math.isfinite(value) and (value >= low if inclusive else value > low)
    if not ok:
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise UserError(f"{name} is {value!r}; valid: a finite number {bound}")


def check_train_config(cfg: TrainConfig, where: str = "") -> None:
    """Every range and name of a TrainConfig (method, arch, epochs, data, optimiser)."""
    from metabn_bench.methods import METHODS
    from metabn_bench.models import ARCHS

    p = f"{where}." if where else ""
    METHODS.get(cfg.method)
    ARCHS.get(cfg.arch)
    check_int(f"{p}epochs", cfg.epochs, 1)
    check_int(f"{p}seed", cfg.seed, 0)
    d, o = cfg.data, cfg.optim
    check_int(f"{p}data.train_size", d.train_size, 0, "0 = all images")
    check_int(f"{p}data.crop_padding", d.crop_padding, 0, "0 = no crop")
    if len(d.mean) != 3 or len(d.std) != 3:
        raise UserError(f"{p}data.mean and {p}data.std are {list(d.mean)} and {list(d.std)}; "
                        "valid: three numbers each (one per RGB channel)")
    for i in range(3):
        check_float(f"{p}data.mean[{i}]", d.mean[i], -math.inf)
        check_float(f"{p}data.std[{i}]", d.std[i], 0.0, inclusive=False)
    check_float(f"{p}optim.lr", o.lr, 0.0, inclusive=False)
    check_float(f"{p}optim.lr_min", o.lr_min, 0.0)
    check_float(f"{p}optim.momentum", o.momentum, 0.0)
    check_float(f"{p}optim.weight_decay", o.weight_decay, 0.0)
    check_int(f"{p}optim.batch_size", o.batch_size, 1)


def check_corrupt_config(cfg: CorruptConfig, where: str = "") -> None:
    """Every range and name of a CorruptConfig (preset, corruptions, severities, sizes)."""
    from metabn_bench.corruptions import names as cnames
    from metabn_bench.corruptions import registry, tables

    p = f"{where}." if where else ""
    if cfg.preset != "auto" and cfg.preset not in tables.TABLES:
        raise UserError(f"{p}preset (the corruption parameter table) is '{cfg.preset}'; "
                        f"valid: auto, {', '.join(tables.TABLES)}")
    for name in cfg.corruptions:
        registry.get(name)
    bad = [s for s in cfg.severities if s not in cnames.SEVERITIES]
    if bad or not cfg.severities:
        raise UserError(f"invalid {p}severities {list(cfg.severities)}; valid: 1, 2, 3, 4, 5")
    check_int(f"{p}seed", cfg.seed, 0)
    check_int(f"{p}n_test (--n)", cfg.n_test, 0, "0 = all images")
    check_int(f"{p}batch_size", cfg.batch_size, 1)
    backends = ("torch", "imagecorruptions")
    if cfg.backend not in backends:
        raise UserError(f"unknown backend '{cfg.backend}'; valid: {', '.join(backends)}")


def check_eval_config(cfg: EvalConfig, where: str = "") -> None:
    """The protocols (names and options) and the test batch size of an EvalConfig."""
    from metabn_bench.evaluation.protocols import parse_protocol

    p = f"{where}." if where else ""
    if not cfg.protocols:
        raise UserError(f"{p}protocols is empty; valid: one or more of none, bn, tent")
    for spec in cfg.protocols:
        parse_protocol(spec)
    check_int(f"{p}batch_size", cfg.batch_size, 0, "0 = the protocol's default")


def check_suite_config(cfg: SuiteConfig) -> None:
    """A whole suite before any work: methods, seeds, every job's training config, the
    corrupted set's config and the evaluation protocols."""
    from metabn_bench.methods import METHODS

    if not cfg.methods:
        raise UserError("methods is empty; valid: one or more of " + ", ".join(METHODS.names()))
    if not cfg.seeds:
        raise UserError("seeds is empty; a suite needs at least one seed (e.g. seeds: [0])")
    for name in cfg.methods:
        METHODS.get(name)
    for name in cfg.method_hparams:
        if name not in cfg.methods:
            raise UserError(f"method_hparams names '{name}', which is not in methods "
                            f"({', '.join(cfg.methods)})")
    for seed in cfg.seeds:
        check_int("seeds", seed, 0)
    check_train_config(cfg.train, "train")
    check_corrupt_config(cfg.corrupt, "corrupt")
    check_eval_config(cfg.eval, "eval")
