"""`corrupt`: make a corrupted test set in the released layout, resumably.

Work is split into (corruption, severity) cells; each finished cell is saved atomically, so an
interrupted run resumes at the first unfinished cell. Image i of a cell is corrupted with its
own random stream (seed, corruption, severity, i), so the bytes do not depend on batch size.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from metabn_bench import fsio, provenance, runlock
from metabn_bench.config import CorruptConfig, to_dict
from metabn_bench.config_checks import check_corrupt_config
from metabn_bench.corruptions import names as cnames
from metabn_bench.corruptions import ops as registry
from metabn_bench.corruptions import reference_backend, tables
from metabn_bench.corruptions.rng import ImageRandom
from metabn_bench.data.arrays import ArraySet
from metabn_bench.data.loader import batches
from metabn_bench.data.store import PARTS, CorruptedSet, SetWriter, open_set
from metabn_bench.errors import UserError

BACKENDS = ("torch", "imagecorruptions")
# On the CPU the ops run on chunks of this many images: their intermediates then stay in cache,
# which measured 1.5-3x faster per image than chunks of 500 (a chunk's output does not depend on
# its size: every image has its own random stream).
CPU_CHUNK = 64
# Libraries whose version can change the bytes of a corrupted set (recorded when installed).
LIBRARIES = ("opencv-python-headless", "opencv-python", "imagecorruptions-imaug",
             "imagecorruptions", "scikit-image", "numba")


def resolve_names(cfg: CorruptConfig, preset: str | None = None) -> list[str]:
    """The corruptions to make, in canonical order; unknown or unimplemented names are errors.

    For -C-bar, the corruptions of the chosen table (`preset`; without one, the config's named
    table, else CIFAR-10-C-bar's); a named corruption outside that table is an error."""
    cbar_preset = preset or (cfg.preset if cfg.preset in tables.CBAR_TABLES else "cifar")
    if cfg.corruptions:
        for name in cfg.corruptions:
            registry.get(name)
            if cfg.benchmark == "c-bar":
                tables.params(cbar_preset, name, 1)  # a one-line error outside the table
        chosen = list(dict.fromkeys(cfg.corruptions))
    elif cfg.benchmark == "c-bar":
        chosen = [n for n in tables.cbar_table(cbar_preset) if n in registry.CORRUPTIONS]
    else:
        pool = cnames.ALL if cfg.extras else cnames.COMMON
        chosen = [n for n in pool if n in registry.CORRUPTIONS]
    return cnames.canonical_order(chosen)


def _check_severities(severities: tuple[int, ...]) -> tuple[int, ...]:
    bad = [s for s in severities if s not in cnames.SEVERITIES]
    if bad or not severities:
        raise UserError(f"invalid severities {list(severities)}; valid: 1, 2, 3, 4, 5")
    return tuple(sorted(set(severities)))


def corrupt_images(images: np.ndarray, name: str, severity: int, params: Any, seed: int,
                   device: torch.device, batch_size: int = 500, start_index: int = 0,
                   progress: Any = None) -> np.ndarray:
    """Corrupt uint8 NHWC images at one severity; returns uint8 NHWC of the same shape.

    Image i uses the random stream (seed, name, severity, start_index + i), so the result does
    not depend on `batch_size`. `progress` (a tqdm bar) is advanced after every batch.
    """
    op = registry.get(name).op
    out = np.empty_like(images)
    chunk = CPU_CHUNK if device.type == "cpu" else batch_size
    pos = 0
    for batch in batches(images, batch_size, device):
        for start in range(0, batch.shape[0], chunk):
            part = batch[start:start + chunk]
            first = start_index + pos + start
            rng = ImageRandom(seed, name, severity, range(first, first + part.shape[0]), device)
            y = registry.to_uint8(op(registry.as_input(part), params, rng))
            # straight into the output array: one strided copy instead of two
            torch.from_numpy(out[pos + start:pos + start + part.shape[0]]).copy_(
                y.permute(0, 2, 3, 1))
        pos += batch.shape[0]
        if progress is not None:
            progress.update(batch.shape[0])
    return out


def library_versions() -> dict[str, str]:
    """Installed versions of the optional libraries some corruptions or the backend use."""
    found = {}
    for dist in LIBRARIES:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def corrupt_dataset(clean: ArraySet, out_dir: str | Path, cfg: CorruptConfig,
                    device: torch.device, dataset_spec: str = "",
                    progress: bool = True) -> tuple[CorruptedSet, str]:
    """Write the corrupted set of `clean` to `out_dir`; return it and how the preset was chosen.

    The directory is locked while it is written: a second `corrupt` into it stops at once.
    """
    check_corrupt_config(cfg)
    height, width = clean.image_size
    if height != width:
        raise UserError(f"images must be square for the size presets, got {height}x{width}")
    preset, how = tables.choose_preset(cfg.preset, height, cfg.benchmark)
    if cfg.backend == "imagecorruptions":
        reference_backend.check_preset(preset)
        reference_backend.load()
    names = resolve_names(cfg, preset)
    severities = _check_severities(cfg.severities)
    identity = {
        "dataset": {"spec": dataset_spec, "source": clean.source, "split": "test",
                    "n": len(clean), "image_size": [height, width], "classes": list(clean.classes),
                    **({"subset": clean.notes["subset"]} if "subset" in clean.notes else {})},
        "preset": preset, "param_table_sha256": tables.table_hash(preset, cfg.benchmark),
        "seed": cfg.seed, "severities": list(severities), "backend": cfg.backend,
        "n": len(clean),
        # -C sets keep the identity they always had (so their resume checks still match)
        **({"benchmark": cfg.benchmark} if cfg.benchmark != "c" else {}),
    }
    meta = {"layout": "CIFAR-10-C: <corruption>.npy (severities x N, H, W, 3) uint8, "
                      "severity-major; labels.npy tiled 5 times",
            "conversion": "uint8 by truncation", "provenance": provenance.environment(device),
            "config": to_dict(cfg), "libraries": library_versions(),
            **({"backend_package": reference_backend.version()}
               if cfg.backend == "imagecorruptions" else {})}
    with runlock.exclusive(out_dir, "corrupted set directory", stage="corrupt"):
        # temporaries of a killed run (up to one cell or corruption file each) go first
        for where in (Path(out_dir), Path(out_dir) / PARTS):
            fsio.remove_stale_temporaries(where)
        writer = SetWriter(out_dir, clean.images, clean.labels, identity, meta, names)
        _write_cells(writer, clean, cfg, device, names, severities, preset, progress)
    return open_set(out_dir, verify=False), how


def _write_cells(writer: SetWriter, clean: ArraySet, cfg: CorruptConfig, device: torch.device,
                 names: list[str], severities: tuple[int, ...], preset: str,
                 progress: bool) -> None:
    """Make every cell the writer lacks, on worker threads, saving them in order."""
    todo = [(c, s) for c in names for s in severities if not writer.has_cell(c, s)]
    bar = tqdm(total=len(todo) * len(clean), unit="img", desc="corrupt", disable=not progress,
               dynamic_ncols=True, leave=False)

    def make_cell(name: str, severity: int) -> np.ndarray:
        if cfg.backend == "imagecorruptions":
            return reference_backend.corrupt_images(clean.images, name, severity, cfg.seed,
                                                    progress=bar)
        return corrupt_images(clean.images, name, severity, tables.params(preset, name, severity),
                              cfg.seed, device, cfg.batch_size, progress=bar)

    remaining = {c: sum(1 for n, _ in todo if n == c) for c in names}
    for name in names:  # corruptions whose cells were all saved before an interruption
        if remaining[name] == 0 and not writer.is_done(name):
            writer.finish(name, [tables.params(preset, name, s) for s in severities])
    # On the CPU, cells run on one worker thread per core, each with one torch thread (small
    # ops scale better across cells than inside one); the package backend uses NumPy's global
    # generator and stays on one thread. Cells are saved in order by this thread.
    workers = cpu_workers() if device.type == "cpu" and cfg.backend == "torch" else 1
    with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) \
            if workers > 1 else nullcontext() as pool:
        pending: deque[tuple[str, int, Any]] = deque()
        for i, (name, severity) in enumerate(todo):
            bar.set_postfix_str(f"{name} s{severity}")
            pending.append((name, severity, pool.submit(make_cell, name, severity) if pool
                            else make_cell(name, severity)))
            while pending and (len(pending) > workers or i == len(todo) - 1):
                done_name, done_severity, result = pending.popleft()
                writer.write_cell(done_name, done_severity,
                                  result.result() if pool else result)
                remaining[done_name] -= 1
                if remaining[done_name] == 0:
                    writer.finish(done_name,
                                  [tables.params(preset, done_name, s) for s in severities])
    bar.close()


def cpu_workers() -> int:
    """Worker threads for CPU generation: the cores this process may use (at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))
