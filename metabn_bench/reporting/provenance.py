"""Provenance of a report assembled from existing runs (read from their env.json files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metabn_bench import provenance


def provenance_of(paths: list[Path], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Data sources, seeds and corrupted sets of the rows, plus the runs' recorded versions."""
    envs = []
    for path in paths:
        for env_file in ([path / "env.json"] if (path / "env.json").exists()
                         else sorted(Path(path).rglob("env.json"))):
            try:
                env = json.loads(env_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # not a run's record; the rows still carry their own provenance
            if isinstance(env, dict) and "versions" in env:
                envs.append(env)
    summary_files = [p / "summary.json" for p in paths if (p / "summary.json").exists()]
    if summary_files and not envs:  # a results directory: reuse its provenance block
        return json.loads(summary_files[0].read_text()).get("provenance", {})
    now = provenance.environment("cpu")
    return {
        "data_source": "; ".join(sorted({str(r.get("data_source", "?")) for r in rows})),
        "seeds": sorted({int(r["seed"]) for r in rows}),
        "corrupted_set": ", ".join(sorted({str(r.get("set_id", "?")) for r in rows})),
        "arch": ", ".join(sorted({str(r.get("arch", "?")) for r in rows})),
        "versions": envs[0]["versions"] if envs else now["versions"],
        "commit": ", ".join(sorted({e.get("commit", "unknown") for e in envs})) or now["commit"],
        "device": envs[0]["device"] if envs else now["device"],
        "report_generated": now["time"],
    }
