"""Test streams for the adaptive protocols: the order in which test batches arrive, and when the
protocol is reset to the trained model.

A stream is one sequence of batches; each batch is a set of (cell, image) pairs, where a cell is
a (corruption, severity) of the corrupted set. The clean cell always comes first, alone, and the
protocol is reset after it, so the clean error never depends on the stream. Then:

- `per-cell`: each cell's images in set order, cells in canonical order (today's setting);
- `continual`: at each severity, the 15 corruptions one after another (the continual test-time
  adaptation setting of CoTTA, Wang et al., CVPR 2022), severities 1 to 5;
- `gradual`: within each corruption, severity 1 -> 5 -> 1 (CoTTA's gradual setting); an image
  seen twice is scored by its last prediction (after the model has met severity 5);
- `mixed`: every corrupted image of every cell shuffled into one stream;
- `dirichlet`: per cell, images in a class-correlated order: each class spreads over the cell's
  time slots with proportions drawn from Dirichlet(delta) (the non-i.i.d. stream of Gong et al.,
  NOTE, NeurIPS 2022); a small delta gives batches dominated by one class.

Reset policies (`ResetPolicy`): `cell` (whenever the batch's cell changes), `corruption`
(whenever its corruption changes), `never`, `every:K` (every K batches). Shuffles draw from
numpy's generator seeded with `seed`, so the same command gives the same stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metabn_bench.data.loader import to_float
from metabn_bench.errors import UserError
from metabn_bench.evaluation.calibration import CellCalibration

STREAMS = ("per-cell", "continual", "gradual", "mixed", "dirichlet")
DEFAULT_STREAM = "per-cell"
DEFAULT_RESET = "cell"
Cell = tuple[str, int]


@dataclass(frozen=True)
class Batch:
    """One test batch: which cell (index into the cell list) and image each element is."""

    cells: np.ndarray  # int, per element
    images: np.ndarray  # int, per element
    reset: bool  # reset the protocol before this batch


@dataclass(frozen=True)
class ResetPolicy:
    """When to reset: kind in cell | corruption | never | every, and K for every."""

    kind: str
    every: int = 0

    def label(self) -> str:
        """As written on the command line and recorded in the rows."""
        return f"every:{self.every}" if self.kind == "every" else self.kind


def parse_reset(text: str) -> ResetPolicy:
    """'cell' | 'corruption' | 'never' | 'every:K' (K >= 1)."""
    if text in ("cell", "corruption", "never"):
        return ResetPolicy(text)
    kind, _, k = text.partition(":")
    if kind == "every" and k.isdigit() and int(k) >= 1:
        return ResetPolicy("every", int(k))
    raise UserError(f"--reset is '{text}'; valid: cell, corruption, never, every:K (K >= 1)")


def check_stream(stream: str, delta: float, reset: ResetPolicy | None = None) -> None:
    """One-line errors for an unknown stream, a Dirichlet delta that is not > 0, or a mixed
    stream reset by cell or corruption (its batches mix cells)."""
    if stream not in STREAMS:
        raise UserError(f"unknown stream '{stream}'; valid: {', '.join(STREAMS)}")
    if stream == "dirichlet" and not delta > 0:
        raise UserError(f"--dirichlet-delta is {delta}; valid: a number > 0")
    if stream == "mixed" and reset is not None and reset.kind in ("cell", "corruption"):
        raise UserError(f"--stream mixed mixes cells in each batch; --reset {reset.label()} is "
                        "undefined there; valid: never, every:K")


def stream_label(spec: str, stream: str, reset: ResetPolicy, seed: int, delta: float) -> str:
    """The protocol name rows of a non-default stream carry, so that their keys (and report
    tables) never mix with per-cell rows: e.g. 'tent@continual,reset=never,seed=0'."""
    if stream == DEFAULT_STREAM and reset.kind == DEFAULT_RESET:
        return spec
    extra = f",delta={delta:g}" if stream == "dirichlet" else ""
    return f"{spec}@{stream},reset={reset.label()},seed={seed}{extra}"


def dirichlet_order(labels: np.ndarray, slots: int, delta: float,
                    rng: np.random.Generator) -> np.ndarray:
    """A permutation of the images in which each class is spread over `slots` consecutive time
    slots with proportions ~ Dirichlet(delta) (NOTE, Gong et al. 2022)."""
    slot_of = np.empty(labels.size, dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        share = rng.dirichlet(np.full(slots, delta))
        slot_of[members] = np.repeat(np.arange(slots), rng.multinomial(members.size, share))
    # Within a slot, a random order; slots in time order.
    return np.lexsort((rng.random(labels.size), slot_of))


def _sequence(stream: str, cells: list[Cell], n: int, labels: np.ndarray, batch_size: int,
              delta: float, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The corrupted part of the stream as (cell index, image index) per element, in order."""
    index = {c: i for i, c in enumerate(cells)}
    corrupted = [c for c in cells if c[0] != "clean"]
    names = list(dict.fromkeys(c for c, _ in corrupted))
    severities = sorted({s for _, s in corrupted})
    if stream == "continual":
        order = [(c, s) for s in severities for c in names if (c, s) in index]
    elif stream == "gradual":
        path = severities + severities[-2::-1]
        order = [(c, s) for c in names for s in path if (c, s) in index]
    else:
        order = corrupted
    ids = np.arange(n)
    if stream == "mixed":
        pairs = np.array([(index[c], i) for c in order for i in ids], dtype=np.int64)
        pairs = pairs[rng.permutation(len(pairs))]
        return [(pairs[:, 0], pairs[:, 1])]
    out = []
    for c in order:
        images = (dirichlet_order(labels, max(1, -(-n // batch_size)), delta, rng)
                  if stream == "dirichlet" else ids)
        out.append((np.full(n, index[c], dtype=np.int64), images))
    return out


def plan(stream: str, reset: ResetPolicy, cells: list[Cell], n: int, labels: np.ndarray,
         batch_size: int, seed: int = 0, delta: float = 1.0) -> list[Batch]:
    """Every batch of the stream in order, with where the protocol is reset."""
    check_stream(stream, delta, reset)
    rng = np.random.default_rng(seed)
    out: list[Batch] = []
    if ("clean", 0) in cells:
        clean = cells.index(("clean", 0))
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            out.append(Batch(np.full(stop - start, clean), np.arange(start, stop), start == 0))
    segments = _sequence(stream, cells, n, labels, batch_size, delta, rng)
    # A batch never spans two segments (cells): per-cell batches stay those of today.
    since, previous = 0, None
    for seg_cells, seg_images in segments:
        for start in range(0, seg_cells.size, batch_size):
            b_cells = seg_cells[start:start + batch_size]
            first = cells[int(b_cells[0])]
            if previous is None:
                due = True  # the corrupted stream starts from the trained model
            elif reset.kind == "cell":
                due = first != previous
            elif reset.kind == "corruption":
                due = first[0] != previous[0]
            elif reset.kind == "every":
                due = since >= reset.every
            else:
                due = False
            since = 1 if due else since + 1
            out.append(Batch(b_cells, seg_images[start:start + batch_size], due))
            previous = first
    return out


@dataclass
class StreamCell:
    """What a stream gives one cell: each image's last prediction, scored."""

    correct: np.ndarray
    confidence: np.ndarray
    calibration: dict[str, Any]


def run_stream(evaluator: Any, images_of: Callable[[Cell], np.ndarray], cells: list[Cell],
               labels: np.ndarray, steps: list[Batch]) -> dict[Cell, StreamCell]:
    """Feed the batches to `evaluator.protocol` in order, resetting where planned; score each
    image by its last prediction (gradual streams visit a cell twice)."""
    probs: dict[int, np.ndarray] = {}
    loaded: dict[int, np.ndarray] = {}
    for step in steps:
        if step.reset:
            evaluator.reset()
        for c in np.unique(step.cells):
            if int(c) not in loaded:
                loaded[int(c)] = np.asarray(images_of(cells[int(c)]))
        first = loaded[int(step.cells[0])]
        block = np.empty((step.cells.size, *first.shape[1:]), dtype=first.dtype)
        for c in np.unique(step.cells):
            mask = step.cells == c
            block[mask] = loaded[int(c)][step.images[mask]]
        x = torch.from_numpy(block).to(evaluator.device)
        logits = evaluator.protocol.predict(to_float(x, evaluator.fmt))
        p = logits.detach().float().softmax(dim=1).cpu().numpy()
        for c in np.unique(step.cells):
            mask = step.cells == c
            out = probs.setdefault(int(c), np.full((labels.size, p.shape[1]), np.nan, np.float32))
            out[step.images[mask]] = p[mask]
    result = {}
    for c, p in probs.items():
        y = torch.from_numpy(np.array(labels, dtype=np.int64))
        cal = CellCalibration()
        # log of the stored probabilities: log_softmax of log p is log p again.
        conf = cal.update(torch.from_numpy(np.log(np.clip(p, 1e-30, None))), y)
        result[cells[c]] = StreamCell(p.argmax(1) == labels, conf.numpy().astype(np.float16),
                                      cal.result())
    return result
