"""Where a number came from: package and library versions, commit, device, time."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import metabn_bench


def _git(*args: str) -> str | None:
    root = Path(metabn_bench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


# Set by whoever runs a copy without .git (scripts/queue/lane.sh runs `git archive` snapshots
# of a commit): the commit the copy was made from, recorded when git cannot tell.
COMMIT_ENV = "METABN_BENCH_COMMIT"


@lru_cache(maxsize=1)
def commit() -> str:
    """The package's git commit (with '+dirty' for uncommitted changes); outside a git checkout
    the commit named by $METABN_BENCH_COMMIT (marked as such), else 'unknown'."""
    rev = _git("rev-parse", "--short=12", "HEAD")
    if not rev:
        named = os.environ.get(COMMIT_ENV, "").strip()
        return f"{named} (from {COMMIT_ENV})" if named else "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no", "--", "metabn_bench")
    return rev + ("+dirty" if status else "")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of Python and of every library that can change a result."""
    import numpy
    import PIL
    import scipy
    import torch
    import torchvision

    return {
        "metabn_bench": metabn_bench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "scipy": scipy.__version__,
        "cuda": str(torch.version.cuda),
    }


def device_info(device: Any) -> dict[str, Any]:
    """A description of the device that ran the computation."""
    import torch

    device = torch.device(device)
    info: dict[str, Any] = {"type": device.type, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        info["name"] = torch.cuda.get_device_name(idx)
        info["count"] = torch.cuda.device_count()
    else:
        info["name"] = platform.processor() or platform.machine()
        info["cpus"] = os.cpu_count()
        # The kernel path torch dispatches to (ATEN_CPU_CAPABILITY can lower it) and oneDNN's
        # ISA cap: both change float summation order, hence trained weights (results/README.md).
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
        if isa:
            info["onednn_max_cpu_isa"] = isa
    return info


def environment(device: Any = "cpu") -> dict[str, Any]:
    """The full provenance record written as env.json and into summaries."""
    return {
        "versions": versions(),
        "commit": commit(),
        "device": device_info(device),
        "platform": platform.platform(),
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
