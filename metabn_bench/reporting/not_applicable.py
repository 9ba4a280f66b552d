"""Protocols that do not apply to a method (bn / tent on a model without BatchNorm): one entry
per (method, protocol) from the rows `evaluate` marks not applicable, shown in tables as "n/a"
with a footnote that gives the reason, never as a number and never dropped silently."""

from __future__ import annotations

from typing import Any

NA = "n/a"


def summarise(cell_rows: list[dict[str, Any]],
              measured: set[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """One entry per (method, protocol) of the not-applicable rows: method, protocol, reason,
    runs, note (its footnote number, from 1). Pairs with measured rows too (`measured`) are left
    out: a table row holds numbers or n/a, not both."""
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for r in cell_rows:
        key = (str(r["method"]), str(r["protocol"]))
        if measured and key in measured:
            continue
        entry = entries.setdefault(key, {"method": key[0], "protocol": key[1],
                                         "reason": str(r.get("reason", "")), "runs": set()})
        entry["runs"].add(str(r.get("run_id", "")))
    reasons: dict[str, int] = {}
    out = []
    for entry in entries.values():
        note = reasons.setdefault(entry["reason"], len(reasons) + 1)
        out.append({**entry, "runs": len(entry["runs"]), "note": note})
    return out


def cell(entry: dict[str, Any]) -> str:
    """What a table shows in place of a number: 'n/a [k]'."""
    return f"{NA} [{entry['note']}]"


def footnotes(entries: list[dict[str, Any]]) -> list[str]:
    """'[k] n/a: <reason>' once per distinct reason, in note order."""
    seen: dict[int, str] = {}
    for e in entries:
        seen.setdefault(int(e["note"]), str(e["reason"]))
    return [f"[{k}] {NA}: {reason}" for k, reason in sorted(seen.items())]
