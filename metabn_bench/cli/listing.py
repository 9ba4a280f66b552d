"""What `metabn-bench list KIND` shows: registered names with a one-line description."""

from __future__ import annotations

from metabn_bench.errors import UserError

KINDS = ("methods", "corruptions", "archs", "datasets", "presets", "protocols")


def _first_line(obj: object) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def listing(kind: str) -> list[tuple[str, str]]:
    """(name, description) pairs of one registry."""
    if kind == "methods":
        from metabn_bench.methods import METHODS

        return [(n, _first_line(METHODS.get(n))) for n in METHODS]
    if kind == "corruptions":
        from metabn_bench.corruptions.names import KNOWN, group_of
        from metabn_bench.corruptions.ops import CORRUPTIONS

        return [(n, f"{group_of(n)}{'' if n in CORRUPTIONS else ' (not implemented yet)'}")
                for n in KNOWN]
    if kind == "archs":
        from metabn_bench.models import ARCHS

        return [(n, ARCHS.get(n).description) for n in ARCHS]
    if kind == "datasets":
        from metabn_bench.data.specs import DATASETS

        return [(n, DATASETS.get(n).usage) for n in DATASETS]
    if kind == "presets":
        from metabn_bench.config import preset_dict, preset_names

        return [(n, str(preset_dict(n).get("description", ""))) for n in preset_names()]
    if kind == "protocols":
        from metabn_bench.evaluation.protocols import PROTOCOLS

        return [(n, _first_line(PROTOCOLS.get(n))) for n in PROTOCOLS]
    raise UserError(f"unknown list '{kind}'; valid: {', '.join(KINDS)}")
