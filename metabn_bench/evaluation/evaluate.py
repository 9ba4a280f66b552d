"""`evaluate`: a model on clean + every (corruption, severity) cell of a corrupted set.

The model is a finished run of this toolkit (RUN_DIR) or a model made elsewhere
(evaluation/external.py, rows into its --out directory); evaluation/subject.py makes both one
`Subject`. One row per (protocol, test batch size, cell) in DIR/eval.jsonl. Each finished cell
is journaled at once and the journal folded into eval.jsonl and per_image.npz (each rewritten
atomically) after each protocol, stream and sweep size (evaluation/journal.py), so an interrupted
evaluation resumes at the next cell and saving costs time linear in the cells. Rows carry
everything needed to aggregate them later without the directory: run id, method, arch,
dataset and data source, seed, corrupted-set id and size preset, protocol and its options,
test batch size and the reset. Which images of a cell were classified correctly goes,
bit-packed, to DIR/per_image.npz (see data/per_image.py), stored before the row that announces it
(`"per_image": true`), with each image's confidence (maximum softmax probability). Each row also
carries the cell's calibration: `ece` (%), `nll` and `brier` (evaluation/calibration.py).

A batch-size sweep (`batch_sizes`) evaluates every protocol and stream once per batch size;
each size's rows carry the protocol label with `batch=B` appended (evaluation/sweep.py), so
that no table ever averages two batch sizes, and `sweep_protocol`, the label without it.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from metabn_bench import fsio, runlock
from metabn_bench.corruptions import names as cnames
from metabn_bench.data import per_image
from metabn_bench.data.loader import batches, to_float
from metabn_bench.data.store import CorruptedSet, open_set
from metabn_bench.device import autocast, resolve_device
from metabn_bench.errors import UserError
from metabn_bench.evaluation.calibration import CellCalibration, confidences_array
from metabn_bench.evaluation.journal import Entry, Journal
from metabn_bench.evaluation.metabn_eval import static_corrections
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
from metabn_bench.evaluation.subject import RunSource, Source, Subject, clean_images
from metabn_bench.evaluation.sweep import check_batch_sizes, sweep_label

__all__ = ["CellResult", "Evaluator", "cells_of", "clean_images", "evaluate"]


def cells_of(cset: CorruptedSet, extras: bool) -> list[tuple[str, int]]:
    """('clean', 0) then every (corruption, severity) of the set in canonical order (the 4 -C
    extras only with `extras`; -C-bar corruptions always: they are their own benchmark)."""
    names = [c for c in cset.corruptions if extras or c not in cnames.EXTRA]
    return [("clean", 0)] + [(c, s) for c in names for s in cset.severities]


@dataclass
class _Job:
    """What every cell of one evaluate call shares."""

    source: Source
    cset: CorruptedSet
    clean: np.ndarray
    cells: list[tuple[str, int]]
    device: torch.device
    progress: bool

    def images(self, cell: tuple[str, int]) -> np.ndarray:
        return self.clean if cell[0] == "clean" else self.cset.cell(*cell)


def evaluate(run_dir: str | Path | Source, corrupted: str | Path,
             protocols: tuple[str, ...] = ("none",), batch_size: int = 0, extras: bool = False,
             device: str = "auto", verify: bool = True, progress: bool = True,
             stream: str = DEFAULT_STREAM, reset: str = DEFAULT_RESET, stream_seed: int = 0,
             dirichlet_delta: float = 0.1,
             batch_sizes: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """Evaluate a finished run (or a Source such as an ExternalModel); returns all of its rows
    for this corrupted set.

    The output directory is locked meanwhile (a second `evaluate` on it stops at once with a
    one-line error), and each new row is merged into the rows on disk, never over them.
    `stream` and `reset` (evaluation/streams.py) other than per-cell / cell run every cell of a
    protocol as one stream, written when it ends, under the protocol name `stream_label` gives.
    `batch_sizes` sweeps the test batch size (one set of rows per size; see evaluation/sweep.py).
    """
    policy = parse_reset(reset)
    check_stream(stream, dirichlet_delta, policy)
    sizes = check_batch_sizes(batch_size, batch_sizes)
    source = RunSource(run_dir) if isinstance(run_dir, (str, Path)) else run_dir
    dev = resolve_device(device)
    source.check(dev)
    for spec in protocols:
        parse_protocol(spec)
    cset = open_set(corrupted, verify=verify)
    job = _Job(source, cset, source.clean_images(cset), cells_of(cset, extras), dev, progress)
    num_classes = source.num_classes(dev, cset)
    if cset.labels.max() >= num_classes:
        raise UserError(f"the corrupted set has labels up to {int(cset.labels.max())} but the "
                        f"model has {num_classes} classes")
    _warn_if_class_sorted(cset.labels, protocols)
    out = source.out_dir
    with runlock.exclusive(out, "run directory", stage="evaluate"):
        fsio.remove_stale_temporaries(out)  # a killed writer's; we hold the lock
        journal = Journal(out)
        rows = journal.consolidate()  # whatever a killed evaluation journaled counts as done
        try:
            how = (stream, policy, stream_seed, dirichlet_delta)
            rows = _protocols(job, journal, rows, protocols, sizes, how, batch_sizes)
        except BaseException:
            # Interrupted (Ctrl-C, an error): fold in what was journaled, so the report sees
            # every finished cell now; if that fails too, the journal stays for the next run.
            with contextlib.suppress(Exception):
                journal.consolidate()
            raise
    return [r for r in rows if r["set_id"] == cset.set_id]


def _protocols(job: _Job, journal: Journal, rows: list[dict[str, Any]],
               protocols: tuple[str, ...], sizes: list[int], how: tuple[Any, ...],
               batch_sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every protocol at every batch size, each consolidated when it ends; all rows on disk."""
    source, cset, dev = job.source, job.cset, job.device
    stream, policy, stream_seed, dirichlet_delta = how
    done = {_key(r) for r in rows}
    for spec in protocols:
        for size in sizes:
            bs = size or PROTOCOLS.get(parse_protocol(spec)[0]).default_batch_size
            label = stream_label(spec, stream, policy, stream_seed, dirichlet_delta)
            extra: dict[str, Any] = {}
            if label != spec:
                extra = {"stream": stream, "reset": policy.label(), "stream_seed": stream_seed}
                if stream == "dirichlet":
                    extra["dirichlet_delta"] = dirichlet_delta
            if batch_sizes:
                extra["sweep_protocol"] = label
                label = sweep_label(label, bs)
            todo = [c for c in job.cells if _key_of(cset.set_id, label, bs, *c) not in done]
            if not todo:
                continue
            subject = source.load(dev)
            try:
                evaluator = Evaluator(subject, dev, spec)
            except NotApplicableError as exc:
                # Recorded, not skipped: the table shows n/a with the reason instead of a
                # gap or a silent copy of `none`.
                na = [_not_applicable_row(subject.identity, cset, label, bs, *c, str(exc))
                      | extra for c in todo]
                rows = journal.consolidate(Entry(row) for row in na)
                continue
            if "stream" in extra:
                rows = _stream_rows(job, journal, evaluator, label, bs, extra, how)
            else:
                _cell_rows(job, journal, evaluator, spec, label, bs, todo, extra)
                rows = journal.consolidate()
    return rows


def _stream_rows(job: _Job, journal: Journal, evaluator: Evaluator, label: str, bs: int,
                 extra: dict[str, Any], how: tuple[Any, ...]) -> list[dict[str, Any]]:
    """A stream is one unit: every cell again, all of its rows (and vectors) stored at once
    when it ends; returns all rows on disk."""
    stream, policy, seed, delta = how
    cset = job.cset
    t0 = time.perf_counter()
    steps = plan(stream, policy, job.cells, cset.n, cset.labels, bs, seed, delta)
    got = run_stream(evaluator, job.images, job.cells, cset.labels, steps)
    seconds = (time.perf_counter() - t0) / len(job.cells)
    new = []
    for (corruption, severity), cell in got.items():
        row = _row(evaluator.subject.identity, cset, label, evaluator, bs, corruption,
                   severity, int((~cell.correct).sum()), seconds) | cell.calibration | extra
        new.append(Entry(row, per_image.pack(cell.correct), cell.confidence))
    return journal.consolidate(new)


def _cell_rows(job: _Job, journal: Journal, evaluator: Evaluator, spec: str, label: str,
               bs: int, todo: list[tuple[str, int]], extra: dict[str, Any]) -> None:
    """Per-cell evaluation with a reset before each cell; each cell journaled when it ends."""
    cset = job.cset
    name = f"evaluate {job.source.label()} [{spec}" + (f", batch {bs}]" if label != spec else "]")
    bar = tqdm(todo, desc=name, unit="cell", disable=not job.progress, leave=False,
               dynamic_ncols=True)
    for corruption, severity in bar:
        t0 = time.perf_counter()
        cell = evaluator.cell(job.images((corruption, severity)), cset.labels, bs)
        seconds = time.perf_counter() - t0
        row = _row(evaluator.subject.identity, cset, label, evaluator, bs, corruption, severity,
                   int((~cell.correct).sum()), seconds) | cell.calibration | extra
        # The journal stores the vector durably before the row that announces it.
        journal.add(row, cell.correct, cell.confidence)


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
    """A model (a run directory, or a loaded Subject) wrapped in one test-time protocol."""

    def __init__(self, source: str | Path | Subject, device: torch.device, spec: str) -> None:
        subject = source if isinstance(source, Subject) else RunSource(source).load(device)
        self.subject = subject
        self.device = device
        self.fmt = subject.fmt
        self.model = subject.model
        name = parse_protocol(spec)[0]
        if name != "none" and subject.adaptation_blocked:
            raise NotApplicableError(f"protocol '{name}' is not applicable to this model: "
                                     f"{subject.adaptation_blocked}; evaluate it with 'none'")
        self.protocol = make_protocol(spec, subject.model, self._forward, self._static)

    def _static(self, n_images: int) -> dict[str, list[list[float]]]:
        """Meta-BN's static control: its corrections averaged over clean training images."""
        s = self.subject
        if s.run_dir is None:
            raise UserError("the static control needs a run of this toolkit (its training "
                            "images); valid for this model: control=zero-z or shuffle-z")
        return static_corrections(s.run_dir, s.model, self._forward, s.config, self.device,
                                  s.fmt, n_images)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.subject.amp):
            return self.model(self.subject.normalize(x))

    def reset(self) -> None:
        """Back to the model as loaded: the method's test-time state, then the protocol's."""
        self.subject.reset()
        self.protocol.reset()

    def correct(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> np.ndarray:
        """Which images of one cell are classified correctly (state reset first), as bools."""
        return self.cell(images, labels, batch_size).correct

    def cell(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> CellResult:
        """One cell (state reset first): per-image correctness and confidence, calibration."""
        self.reset()
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


def _cell_identity(identity: dict[str, Any], cset: CorruptedSet, corruption: str,
                   severity: int) -> dict[str, Any]:
    """The fields that say which model and which cell of which set a row is about."""
    manifest = cset.manifest or {}
    return {
        **identity, "data_source": cset.source,
        "set_id": cset.set_id, "size_preset": manifest.get("preset", "released"),
        "corruption": corruption, "severity": severity,
        "group": "clean" if corruption == "clean" else cnames.group_of(corruption),
        "n": cset.n,
    }


def _row(identity: dict[str, Any], cset: CorruptedSet, spec: str, ev: Evaluator, bs: int,
         corruption: str, severity: int, errors: int, seconds: float) -> dict[str, Any]:
    return {
        **_cell_identity(identity, cset, corruption, severity),
        "errors": errors, "error": 100.0 * errors / cset.n,
        "protocol": spec, "protocol_options": ev.protocol.describe(),
        "test_batch_size": bs, "reset": "per cell", "stream": DEFAULT_STREAM,
        "seconds": round(seconds, 3),
        "per_image": True,
        **ev.protocol.row_fields(),
    }


def _not_applicable_row(identity: dict[str, Any], cset: CorruptedSet, spec: str, bs: int,
                        corruption: str, severity: int, reason: str) -> dict[str, Any]:
    """A cell's row for a protocol that does not apply to the model: the cell's identity,
    `applicable` false and the reason; errors, error and seconds are null."""
    return {
        **_cell_identity(identity, cset, corruption, severity),
        "errors": None, "error": None, "protocol": spec,
        "protocol_options": {}, "test_batch_size": bs, "reset": "per cell", "seconds": None,
        "per_image": False, "applicable": False, "reason": reason,
    }
