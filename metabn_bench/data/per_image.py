"""Per-image correctness of every evaluated cell, stored bit-packed next to the result rows.

A cell's row in eval.jsonl says how many of its N images were misclassified; paired statistics
(the bootstrap over test images in reporting/stats.py) need to know *which*. Evaluation therefore also
stores, per (corrupted set, protocol, test batch size, cell), the N-bit vector of correct
predictions, packed 8 per byte (np.packbits), in one .npz file of three arrays: `keys` (one
string per cell), `offsets` (where each cell's bytes start in `bits`, plus the end) and `bits`;
since calibration was added, also each image's confidence (maximum softmax probability, float16)
in `conf`, cell i's at conf[conf_offsets[i]:conf_offsets[i + 1]] (empty for a cell stored
without them; files without these two arrays are read as having none):

- RUN_DIR/per_image.npz: keys "set_id|protocol|batch size|corruption|severity";
- results/<suite>/per_image.npz: the same, prefixed with "run_id|".

Evaluation journals each cell's vector before the row that announces it and folds them into this
file (rewritten atomically) before eval.jsonl (evaluation/journal.py), so it is as resumable as
eval.jsonl; a row carries `"per_image": true` when its vector was stored. Rows
written before this existed simply lack the field (statistics that need vectors skip them).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from metabn_bench import fsio
from metabn_bench.errors import UserError

RUN_FILE = "per_image.npz"
RESULTS_FILE = "per_image.npz"
KEY_FIELDS = ("run_id", "set_id", "protocol", "test_batch_size", "corruption", "severity")
CellKey = tuple[str, str, int, str, int]  # set_id, protocol, test batch size, corruption, severity
RowKey = tuple[str, str, str, int, str, int]  # run_id + CellKey
Stored = dict[tuple[Any, ...], np.ndarray]


def cell_key(row: Mapping[str, Any]) -> CellKey:
    """The identity of a row's cell within its run."""
    return (str(row["set_id"]), str(row["protocol"]), int(row["test_batch_size"]),
            str(row["corruption"]), int(row["severity"]))


def row_key(row: Mapping[str, Any]) -> RowKey:
    """The identity of a row's cell across runs."""
    return (str(row["run_id"]), *cell_key(row))


def _name(key: tuple[Any, ...]) -> str:
    return "|".join(str(part) for part in key)


def _parse(name: str, with_run: bool) -> tuple[Any, ...]:
    parts = name.split("|")
    if len(parts) != (6 if with_run else 5):
        raise ValueError(name)
    *head, bs, corruption, severity = parts
    return (*head, int(bs), corruption, int(severity))


def pack(correct: np.ndarray) -> np.ndarray:
    """A boolean vector as bytes, 8 images per byte."""
    return np.packbits(np.asarray(correct, dtype=bool))


def unpack(packed: np.ndarray, n: int) -> np.ndarray:
    """The boolean vector of `n` images back from `pack`."""
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), count=n).astype(bool)


def _load_all(path: Path, with_run: bool) -> tuple[Stored, Stored]:
    """The packed correctness and the confidences of every cell in the file."""
    if not path.exists():
        return {}, {}
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, offsets, bits = data["keys"], data["offsets"], data["bits"]
            names = [_parse(str(name), with_run) for name in keys]
            packed = {k: bits[offsets[i]:offsets[i + 1]] for i, k in enumerate(names)}
            conf: Stored = {}
            if "conf" in data.files:  # absent in files written before calibration
                c, c_off = data["conf"], data["conf_offsets"]
                conf = {k: c[c_off[i]:c_off[i + 1]] for i, k in enumerate(names)
                        if c_off[i + 1] > c_off[i]}
            return packed, conf
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise UserError(f"'{path}' is not a readable per-image file ({exc}); delete it and "
                        "re-run the evaluation to rebuild it") from None


def _load(path: Path, with_run: bool) -> Stored:
    return _load_all(path, with_run)[0]


def _save(path: Path, vectors: Mapping[tuple[Any, ...], np.ndarray],
          confidences: Mapping[tuple[Any, ...], np.ndarray] | None = None) -> None:
    items = sorted(vectors.items())
    sizes = [v.size for _, v in items]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    bits = np.concatenate([v for _, v in items]) if items else np.zeros(0, np.uint8)
    confidences = confidences or {}
    conf = [np.asarray(confidences.get(k, np.zeros(0)), dtype=np.float16) for k, _ in items]
    conf_offsets = np.concatenate([[0], np.cumsum([c.size for c in conf])]).astype(np.int64)
    with fsio.atomic_open(path, "wb") as fh:
        # Compressed: the bits are dense, but the repetitive key strings shrink tenfold.
        np.savez_compressed(fh, keys=np.array([_name(k) for k, _ in items], dtype=str),
                            offsets=offsets, bits=bits.astype(np.uint8),
                            conf_offsets=conf_offsets,
                            conf=np.concatenate(conf) if conf else np.zeros(0, np.float16))


class RunVectors:
    """The per-image file of one run directory: load once, add cells, save atomically."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / RUN_FILE
        self.packed, self.confidences = _load_all(self.path, with_run=False)

    def __contains__(self, key: CellKey) -> bool:
        return key in self.packed

    def put(self, key: CellKey, correct: np.ndarray, confidence: np.ndarray | None = None) -> None:
        """Store one cell's vector (and confidences) and rewrite the file (atomically)."""
        if confidence is not None and np.shape(confidence) != np.shape(correct):
            raise ValueError(f"{np.size(confidence)} confidences for {np.size(correct)} images")
        self.add_packed(key, pack(correct), confidence)
        self.save()

    def add_packed(self, key: CellKey, packed: np.ndarray,
                   confidence: np.ndarray | None = None) -> None:
        """Add one cell's packed vector (and confidences) in memory; `save` writes the file."""
        self.packed[key] = np.asarray(packed, dtype=np.uint8)
        if confidence is not None:
            self.confidences[key] = np.asarray(confidence, dtype=np.float16)
        else:
            self.confidences.pop(key, None)  # never leave another evaluation's confidences

    def save(self) -> None:
        """Rewrite the file with every cell (atomically)."""
        _save(self.path, self.packed, self.confidences)


PerImage = dict[RowKey, np.ndarray]  # row key -> boolean vector (True = correct)


def _unpacked(packed: Mapping[tuple[Any, ...], np.ndarray], rows: Iterable[Mapping[str, Any]],
              key: Callable[[Mapping[str, Any]], tuple[Any, ...]]) -> PerImage:
    """The vectors of the rows that announce one and have it in `packed` (found by `key`)."""
    return {row_key(row): unpack(packed[key(row)], int(row["n"]))
            for row in rows if has_vector(row) and key(row) in packed}


def load_run(run_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> PerImage:
    """Vectors of the rows of one run directory that announce one (`per_image` true)."""
    return _unpacked(_load(Path(run_dir) / RUN_FILE, with_run=False), rows, cell_key)


def load_results(results_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> PerImage:
    """Vectors of a results directory's rows (from its per_image.npz, if any)."""
    return _unpacked(_load(Path(results_dir) / RESULTS_FILE, with_run=True), rows, row_key)


def _confidences(conf: Stored, rows: Iterable[Mapping[str, Any]],
                 key: Callable[[Mapping[str, Any]], tuple[Any, ...]]) -> PerImage:
    return {row_key(row): conf[key(row)].astype(np.float32) for row in rows
            if has_vector(row) and key(row) in conf and conf[key(row)].size == int(row["n"])}


def load_run_confidences(run_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> PerImage:
    """Per-image confidences of a run directory's rows (only those stored with them)."""
    return _confidences(_load_all(Path(run_dir) / RUN_FILE, with_run=False)[1], rows, cell_key)


def load_results_confidences(results_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> PerImage:
    """Per-image confidences of a results directory's rows (only those stored with them)."""
    return _confidences(_load_all(Path(results_dir) / RESULTS_FILE, with_run=True)[1], rows, row_key)


def save_results(results_dir: str | Path, vectors: PerImage,
                 confidences: PerImage | None = None) -> Path | None:
    """Write every vector (and confidence) of a report into results_dir/per_image.npz (None if
    there are no vectors)."""
    if not vectors:
        return None
    path = Path(results_dir) / RESULTS_FILE
    _save(path, {key: pack(value) for key, value in vectors.items()},
          {key: value for key, value in (confidences or {}).items() if key in vectors})
    return path


def has_vector(row: Mapping[str, Any]) -> bool:
    """Whether a row announces a stored per-image vector (false for older rows)."""
    value = row.get("per_image")
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return isinstance(value, str) and value.strip().lower() == "true"  # as read back from CSV
