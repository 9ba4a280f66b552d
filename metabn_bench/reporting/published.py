"""Published numbers (resources/published.yaml) placed beside measured ones where settings match.

An entry is shown only when every key of its setting (data set, architecture, test-time
protocol and its options, number of test images, number of corruptions, test batch size where
the paper fixes it) equals the measured row's. Reported numbers live in their own table
column, labelled "reported", with the source; they never enter a measured column or a mean.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import pandas as pd
import yaml

from metabn_bench.evaluation.protocols import parse_protocol

METRICS = {
    "mce": "CIFAR mCE (%): unnormalised mean error over the 15 common corruptions x 5 severities",
    "severity5": "mean error (%) over the 15 common corruptions at severity 5",
    "clean_error": "top-1 error (%) on the clean test set",
}
SETTING_KEYS = ("dataset", "arch", "protocol", "protocol_options", "test_images", "corruptions",
                "test_batch_size")


@dataclass(frozen=True)
class Published:
    """One published number with its setting and source."""

    method: str
    reported_as: str
    metric: str
    value: float
    setting: dict[str, Any]
    source: str
    citation: str
    url: str


@lru_cache(maxsize=1)
def load_published() -> tuple[Published, ...]:
    """Every entry of the package's published.yaml (validated)."""
    text = resources.files("metabn_bench").joinpath("resources/published.yaml").read_text()
    data = yaml.safe_load(text)
    out = []
    for entry in data["numbers"]:
        source = data["sources"][entry["source"]]
        setting = dict(data["settings"][entry["setting"]])
        unknown = set(setting) - set(SETTING_KEYS)
        if unknown or entry["metric"] not in METRICS:
            raise ValueError(f"published.yaml entry {entry}: unknown keys {unknown} or metric")
        out.append(Published(entry["method"], entry["as"], entry["metric"], float(entry["value"]),
                             setting, entry["source"], " ".join(source["citation"].split()),
                             source["url"]))
    return tuple(out)


def dataset_family(spec: str, source: str) -> str | None:
    """'cifar10', 'cifar100' or 'tinyimagenet' from a data set SPEC or data-source label."""
    spec = spec.lower()
    if spec in ("cifar10", "cifar100", "tinyimagenet"):
        return spec
    text = source.lower()
    if re.match(r"cifar-?100\b", text):
        return "cifar100"
    if re.match(r"cifar-?10\b", text):
        return "cifar10"
    if "tiny" in text and "imagenet" in text:
        return "tinyimagenet"
    return None


def _options(value: Any) -> dict[str, Any]:
    """Protocol options as a dict (rows from cells.csv hold their text)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, dict):
                return parsed
    return {}


def measured_setting(group: pd.DataFrame, corruptions: list[str]) -> dict[str, Any]:
    """The setting of one (method, protocol) group of the long frame."""
    first = group.iloc[0]
    clean = group[group["corruption"] == "clean"]
    return {
        "dataset": dataset_family(str(first.get("dataset", "")), str(first.get("data_source", ""))),
        "arch": first.get("arch"),
        "protocol": parse_protocol(str(first["protocol"]))[0],
        "protocol_options": _options(first.get("protocol_options")),
        "test_images": int((clean if len(clean) else group)["n"].iloc[0]) if "n" in group else None,
        "corruptions": len(corruptions),
        "test_batch_size": int(first["test_batch_size"]) if "test_batch_size" in group else None,
    }


def _matches(setting: dict[str, Any], measured: dict[str, Any]) -> bool:
    for key, want in setting.items():
        have = measured.get(key)
        if key == "protocol_options":
            if any(float(have.get(k, float("nan"))) != float(v) for k, v in want.items()):
                return False
        elif have != want:
            return False
    return True


def _notes(group: pd.DataFrame) -> str:
    notes = []
    source = str(group["data_source"].iloc[0]) if "data_source" in group else ""
    if "jpeg" in source.lower():
        notes.append(f"measured on {source}, not the original test images")
    if "size_preset" in group and str(group["size_preset"].iloc[0]) != "released":
        notes.append("measured on a corrupted set made by metabn-bench, not the released files")
    return "; ".join(notes)


def published_rows(df: pd.DataFrame, summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reported numbers whose setting matches a measured (method, protocol), with the measured one."""
    out: list[dict[str, Any]] = []
    if df.empty:
        return out
    for row in summary:
        group = df[(df["method"] == row["method"]) & (df["protocol"] == row["protocol"])]
        if group.empty:
            continue
        setting = measured_setting(group, row.get("corruptions", []))
        for entry in load_published():
            if entry.method != row["method"] or not _matches(entry.setting, setting):
                continue
            out.append({
                "method": row["method"], "protocol": row["protocol"], "metric": entry.metric,
                "reported": entry.value, "reported_as": entry.reported_as,
                "measured": row.get(entry.metric), "measured_std": row.get(f"{entry.metric}_std"),
                "n_seeds": row.get("n_seeds"), "source": entry.source, "citation": entry.citation,
                "notes": _notes(group),
            })
    return out
