"""The Registry type, the registries' contents and the strict configuration layer."""

from __future__ import annotations

import pytest

from metabn_bench.config import (
    SuiteConfig,
    TrainConfig,
    build_train_config,
    config_hash,
    from_dict,
    load_preset,
    parse_overrides,
    preset_names,
)
from metabn_bench.corruptions import CORRUPTIONS
from metabn_bench.data.specs import DATASETS
from metabn_bench.errors import UserError
from metabn_bench.evaluation.protocols import PROTOCOLS
from metabn_bench.methods import METHODS
from metabn_bench.models import ARCHS
from metabn_bench.registry import Registry


def test_registry_keeps_order_and_names_valid_entries() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("b", 1)
    reg.add("a", 2)
    assert reg.names() == ["b", "a"]
    assert reg.get("a") == 2
    with pytest.raises(UserError, match=r"unknown widget 'c'; valid: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="twice"):
        reg.add("a", 3)


def test_registries_hold_the_foundation_entries() -> None:
    assert "vanilla" in METHODS
    assert {"wrn40_2", "resnet18", "preact_resnet18", "wrn10_1"} <= set(ARCHS.names())
    assert {"synthetic", "npy", "folder", "cifar10", "cifar100", "tinyimagenet"} <= set(DATASETS)
    assert {"gaussian_noise", "contrast", "defocus_blur", "jpeg_compression"} <= set(CORRUPTIONS)
    assert {"none", "bn", "tent"} <= set(PROTOCOLS)


def test_unknown_config_key_lists_valid_keys() -> None:
    with pytest.raises(UserError, match=r"unknown config key 'optim.lrr'; valid keys here: lr,"):
        from_dict(TrainConfig, {"optim": {"lrr": 0.1}})


@pytest.mark.parametrize(("data", "message"), [
    ({"epochs": "ten"}, "must be an integer"),
    ({"optim": {"lr": "fast"}}, "must be a number"),
    ({"amp": 1}, "must be true or false"),
    ({"data": 3}, "must be a mapping"),
])
def test_wrong_types_are_user_errors(data: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        from_dict(TrainConfig, data)


def test_set_overrides_parse_yaml_values_and_take_precedence(tmp_path) -> None:
    assert parse_overrides(["optim.lr=0.05", "epochs=3", "data.mean=[0.1,0.2,0.3]"]) == {
        "optim": {"lr": 0.05}, "epochs": 3, "data": {"mean": [0.1, 0.2, 0.3]}}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 7\noptim:\n  lr: 0.2\n")
    cfg = build_train_config({"epochs": 5}, str(cfg_file), ["optim.lr=0.3"])
    assert cfg.epochs == 7 and cfg.optim.lr == 0.3 and cfg.data.mean == (0.5, 0.5, 0.5)
    with pytest.raises(UserError, match="key=value"):
        parse_overrides(["epochs"])


def test_config_hash_ignores_device_but_not_recipe() -> None:
    a = from_dict(TrainConfig, {"device": "cpu"})
    b = from_dict(TrainConfig, {"device": "cuda"})
    c = from_dict(TrainConfig, {"optim": {"lr": 0.2}})
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_every_shipped_preset_loads() -> None:
    names = preset_names()
    assert {"smoke", "cifar10-cpu", "cifar10", "cifar100", "tinyimagenet"} <= set(names)
    for name in names:
        cfg = load_preset(name)
        assert isinstance(cfg, SuiteConfig) and cfg.methods
    with pytest.raises(UserError, match="unknown preset 'nope'; valid: "):
        load_preset("nope")
    with pytest.raises(UserError, match="unknown config key 'train.epochz'"):
        load_preset("smoke", ["train.epochz=1"])
