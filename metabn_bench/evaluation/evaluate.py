"""`evaluate`: a trained run on clean + every (corruption, severity) cell of a corrupted set.

One row per (protocol, cell) in RUN_DIR/eval.jsonl, rewritten atomically after each cell, so
an interrupted evaluation resumes at the next cell. Rows carry everything needed to aggregate
them later without the run directory: run id, method, arch, dataset and data source, seed,
corrupted-set id and size preset, protocol and its options, test batch size and the reset.
Which images of a cell were classified correctly goes, bit-packed, to RUN_DIR/per_image.npz
(see data/per_image.py) just before the row that announces it (`"per_image": true`), with each
image's confidence (maximum softmax probability). Each row also carries the cell's calibration:
`ece` (%), `nll` and `brier` (evaluation/calibration.py).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from metabn_bench import fsio, runlock, runs
from metabn_bench.corruptions import names as cnames
from metabn_bench.data import per_image
from metabn_bench.data.loader import batches, to_float
from metabn_bench.data.specs import load_split
from metabn_bench.data.store import CorruptedSet, open_set
from metabn_bench.device import autocast, resolve_device
from metabn_bench.errors import UserError
from metabn_bench.evaluation.calibration import CellCalibration, confidences_array
from metabn_bench.evaluation.protocols import (
    PROTOCOLS,
    NotApplicableError,
    make_protocol,
    parse_protocol,
)
from metabn_bench.evaluation.streams import (
    DEFAULT_RESET,
    DEFAULT_STREAM,
    check_stream,
    parse_reset,
    plan,
    run_stream,
    stream_label,
)
from metabn_bench.evaluation.trained import load_trained
from metabn_bench.runs import EVAL_FILE


def clean_images(run_cfg: Any, cset: CorruptedSet) -> np.ndarray:
    """The set's clean images (for a released set without them: the run's first N test images)."""
    clean = cset.clean()
    if clean is not None:
        return clean
    # A released set has no clean copy: use the first N test images of the run's data set.
    data = load_split(run_cfg.data.dataset, "test", run_cfg.data.data_root, 0, run_cfg.data.label)
    if len(data) < cset.n:
        raise UserError(f"the corrupted set has {cset.n} images but the test split only {len(data)}")
    if not np.array_equal(data.labels[:cset.n], cset.labels):
        raise UserError("the corrupted set's labels do not match the run's test split")
    return data.images[:cset.n]


def cells_of(cset: CorruptedSet, extras: bool) -> list[tuple[str, int]]:
    """('clean', 0) then every (corruption, severity) of the set in canonical order (the 4 -C
    extras only with `extras`; -C-bar corruptions always: they are their own benchmark)."""
    names = [c for c in cset.corruptions if extras or c not in cnames.EXTRA]
    return [("clean", 0)] + [(c, s) for c in names for s in cset.severities]


def evaluate(run_dir: str | Path, corrupted: str | Path, protocols: tuple[str, ...] = ("none",),
             batch_size: int = 0, extras: bool = False, device: str = "auto",
             verify: bool = True, progress: bool = True, stream: str = DEFAULT_STREAM,
             reset: str = DEFAULT_RESET, stream_seed: int = 0,
             dirichlet_delta: float = 0.1) -> list[dict[str, Any]]:
    """Evaluate a finished run; returns all of its rows for this corrupted set.

    The run directory is locked meanwhile (a second `evaluate` on it stops at once with a
    one-line error), and each new row is merged into the rows on disk, never over them.
    `stream` and `reset` (evaluation/streams.py) other than per-cell / cell run every cell of a
    protocol as one stream, written when it ends, under the protocol name `stream_label` gives.
    """
    policy = parse_reset(reset)
    check_stream(stream, dirichlet_delta, policy)
    run_dir = Path(run_dir)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise UserError(f"--batch-size is {batch_size!r}; valid: an integer >= 0 "
                        "(0 = the protocol's default)")
    runs.require_finished(run_dir, "; re-run its train command to resume it")
    for spec in protocols:
        parse_protocol(spec)
    cfg = runs.load_config(run_dir)
    dev = resolve_device(device)
    cset = open_set(corrupted, verify=verify)
    clean = clean_images(cfg, cset)
    num_classes = len(runs.class_names(run_dir))
    if cset.labels.max() >= num_classes:
        raise UserError(f"the corrupted set has labels up to {int(cset.labels.max())} but the "
                        f"model has {num_classes} classes")
    _warn_if_class_sorted(cset.labels, protocols)
    runs.load_weights(run_dir)  # a missing, truncated or unsafe model.pt: before the lock
    with runlock.exclusive(run_dir, "run directory", stage="evaluate"):
        fsio.remove_stale_temporaries(run_dir)  # a killed writer's; we hold the lock
        rows = runs.read_eval_rows(run_dir / EVAL_FILE)
        vectors = per_image.RunVectors(run_dir)
        done = {_key(r) for r in rows}
        cells = cells_of(cset, extras)
        for spec in protocols:
            bs = batch_size or PROTOCOLS.get(parse_protocol(spec)[0]).default_batch_size
            label = stream_label(spec, stream, policy, stream_seed, dirichlet_delta)
            todo = [c for c in cells if _key_of(cset.set_id, label, bs, *c) not in done]
            if not todo:
                continue
            try:
                evaluator = Evaluator(run_dir, dev, spec)
            except NotApplicableError as exc:
                # Recorded, not skipped: the table shows n/a with the reason instead of a gap
                # or a silent copy of `none`.
                na = [_not_applicable_row(cfg, run_dir, cset, label, bs, *c, str(exc)) for c in todo]
                rows = _merge(runs.read_eval_rows(run_dir / EVAL_FILE), [*rows, *na])
                fsio.write_jsonl(run_dir / EVAL_FILE, rows)
                continue
            if label != spec:
                # A stream is one unit: every cell again, the rows when it ends.
                t0 = time.perf_counter()
                steps = plan(stream, policy, cells, cset.n, cset.labels, bs, stream_seed,
                             dirichlet_delta)
                got = run_stream(evaluator, lambda c: clean if c[0] == "clean" else cset.cell(*c),
                                 cells, cset.labels, steps)
                seconds = (time.perf_counter() - t0) / len(cells)
                extra = {"stream": stream, "reset": policy.label(), "stream_seed": stream_seed}
                if stream == "dirichlet":
                    extra["dirichlet_delta"] = dirichlet_delta
                new = []
                for (corruption, severity), cell in got.items():
                    vectors.put(_key_of(cset.set_id, label, bs, corruption, severity),
                                cell.correct, cell.confidence)
                    new.append(_row(cfg, run_dir, cset, label, evaluator, bs, corruption, severity,
                                    int((~cell.correct).sum()), seconds) | cell.calibration | extra)
                rows = _merge(runs.read_eval_rows(run_dir / EVAL_FILE), [*rows, *new])
                fsio.write_jsonl(run_dir / EVAL_FILE, rows)
                continue
            bar = tqdm(todo, desc=f"evaluate {cfg.method} [{spec}]", unit="cell",
                       disable=not progress, leave=False, dynamic_ncols=True)
            for corruption, severity in bar:
                images = clean if corruption == "clean" else cset.cell(corruption, severity)
                t0 = time.perf_counter()
                cell = evaluator.cell(images, cset.labels, bs)
                seconds = time.perf_counter() - t0
                # The vector is on disk before the row that announces it (both writes atomic).
                vectors.put(_key_of(cset.set_id, spec, bs, corruption, severity), cell.correct,
                            cell.confidence)
                row = _row(cfg, run_dir, cset, spec, evaluator, bs, corruption, severity,
                           int((~cell.correct).sum()), seconds) | cell.calibration
                rows = _merge(runs.read_eval_rows(run_dir / EVAL_FILE), [*rows, row])
                fsio.write_jsonl(run_dir / EVAL_FILE, rows)
    return [r for r in rows if r["set_id"] == cset.set_id]


def _merge(on_disk: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows on disk plus ours, one per key (ours win): a row written meanwhile by anything
    that does not take the lock is kept, not overwritten."""
    merged = {_key(r): r for r in on_disk}
    merged.update({_key(r): r for r in ours})
    return list(merged.values())


def _warn_if_class_sorted(labels: np.ndarray, protocols: tuple[str, ...]) -> None:
    """Warn when batch-adaptive protocols would see test batches sorted by class.

    BN adaptation and Tent estimate statistics from each test batch; on class-sorted batches
    they measure label shift, not corruption robustness (released CIFAR-10-C is shuffled;
    sets made by this version from class-sorted sources are too).
    """
    adaptive = [p for p in protocols if parse_protocol(p)[0] != "none"]
    if adaptive and np.unique(labels).size > 1 and not np.any(np.diff(labels) < 0):
        warnings.warn(f"the corrupted set's images are sorted by class: protocols "
                      f"{', '.join(adaptive)} adapt to each test batch and will see one class "
                      "at a time; make the set again with `metabn-bench corrupt`", stacklevel=2)


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return _key_of(row["set_id"], row["protocol"], row["test_batch_size"], row["corruption"],
                   row["severity"])


def _key_of(set_id: str, protocol: str, bs: int, corruption: str, severity: int) -> tuple[Any, ...]:
    return (set_id, protocol, int(bs), corruption, int(severity))


class Evaluator:
    """A model rebuilt from a run directory, wrapped in one test-time protocol."""

    def __init__(self, run_dir: Path, device: torch.device, spec: str) -> None:
        run = load_trained(run_dir, device)
        self.cfg = run.config
        self.device = device
        self.method = run.method
        self.fmt = run.fmt
        self.model = run.model
        self.protocol = make_protocol(spec, run.model, self._forward)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.cfg.amp):
            return self.model(self.method.normalize(x))

    def correct(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> np.ndarray:
        """Which images of one cell are classified correctly (state reset first), as bools."""
        return self.cell(images, labels, batch_size).correct

    def cell(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> CellResult:
        """One cell (state reset first): per-image correctness and confidence, calibration."""
        self.method.reset()
        self.protocol.reset()
        y_all = torch.from_numpy(np.array(labels, dtype=np.int64)).to(self.device)
        hits, confs = [], []
        calibration = CellCalibration()
        pos = 0
        for batch in batches(images, batch_size, self.device):
            logits = self.protocol.predict(to_float(batch, self.fmt))
            y = y_all[pos:pos + batch.shape[0]]
            hits.append(logits.argmax(1) == y)
            confs.append(calibration.update(logits, y))
            pos += batch.shape[0]
        # One transfer per cell, not per batch.
        return CellResult(torch.cat(hits).cpu().numpy(), confidences_array(torch.cat(confs)),
                          calibration.result())


@dataclass
class CellResult:
    """What one evaluated cell gives: per-image correctness and confidence, and calibration."""

    correct: np.ndarray  # bool per image
    confidence: np.ndarray  # float16 maximum softmax probability per image
    calibration: dict[str, Any]  # ece (%), nll, brier, calibration_bins


def _cell_identity(cfg: Any, run_dir: Path, cset: CorruptedSet, corruption: str,
                   severity: int) -> dict[str, Any]:
    """The fields that say which run and which cell of which set a row is about."""
    manifest = cset.manifest or {}
    return {
        "run_id": run_dir.name, "method": cfg.method, "arch": cfg.arch,
        "dataset": cfg.data.dataset, "data_source": cset.source, "seed": cfg.seed,
        "set_id": cset.set_id, "size_preset": manifest.get("preset", "released"),
        "corruption": corruption, "severity": severity,
        "group": "clean" if corruption == "clean" else cnames.group_of(corruption),
        "n": cset.n,
    }


def _row(cfg: Any, run_dir: Path, cset: CorruptedSet, spec: str, ev: Evaluator, bs: int,
         corruption: str, severity: int, errors: int, seconds: float) -> dict[str, Any]:
    return {
        **_cell_identity(cfg, run_dir, cset, corruption, severity),
        "errors": errors, "error": 100.0 * errors / cset.n,
        "protocol": spec, "protocol_options": ev.protocol.describe(),
        "test_batch_size": bs, "reset": "per cell", "stream": DEFAULT_STREAM,
        "seconds": round(seconds, 3),
        "per_image": True,
    }


def _not_applicable_row(cfg: Any, run_dir: Path, cset: CorruptedSet, spec: str, bs: int,
                        corruption: str, severity: int, reason: str) -> dict[str, Any]:
    """A cell's row for a protocol that does not apply to the run: the cell's identity,
    `applicable` false and the reason; errors, error and seconds are null."""
    return {
        **_cell_identity(cfg, run_dir, cset, corruption, severity),
        "errors": None, "error": None, "protocol": spec,
        "protocol_options": {}, "test_batch_size": bs, "reset": "per cell", "seconds": None,
        "per_image": False, "applicable": False, "reason": reason,
    }
