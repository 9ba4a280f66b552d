"""Per-image correctness of every evaluated cell, stored bit-packed next to the result rows.

A cell's row in eval.jsonl says how many of its N images were misclassified; paired statistics
(the bootstrap over test images in stats.py) need to know *which*. Evaluation therefore also
stores, per (corrupted set, protocol, test batch size, cell), the N-bit vector of correct
predictions, packed 8 per byte (np.packbits), in one .npz file of three arrays: `keys` (one
string per cell), `offsets` (where each cell's bytes start in `bits`, plus the end) and `bits`:

- RUN_DIR/per_image.npz: keys "set_id|protocol|batch size|corruption|severity";
- results/<suite>/per_image.npz: the same, prefixed with "run_id|".

The file is rewritten atomically after each cell (before the row that announces it), so it is
as resumable as eval.jsonl; a row carries `"per_image": true` when its vector was stored. Rows
written before this existed simply lack the field (statistics that need vectors skip them).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping
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


def _load(path: Path, with_run: bool) -> dict[tuple[Any, ...], np.ndarray]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, offsets, bits = data["keys"], data["offsets"], data["bits"]
            return {_parse(str(name), with_run): bits[offsets[i]:offsets[i + 1]]
                    for i, name in enumerate(keys)}
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise UserError(f"'{path}' is not a readable per-image file ({exc}); delete it and "
                        "re-run the evaluation to rebuild it") from None


def _save(path: Path, vectors: Mapping[tuple[Any, ...], np.ndarray]) -> None:
    items = sorted(vectors.items())
    sizes = [v.size for _, v in items]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    bits = np.concatenate([v for _, v in items]) if items else np.zeros(0, np.uint8)
    with fsio.atomic_open(path, "wb") as fh:
        # Compressed: the bits are dense, but the repetitive key strings shrink tenfold.
        np.savez_compressed(fh, keys=np.array([_name(k) for k, _ in items], dtype=str),
                            offsets=offsets, bits=bits.astype(np.uint8))


class RunVectors:
    """The per-image file of one run directory: load once, add cells, save atomically."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / RUN_FILE
        self.packed: dict[tuple[Any, ...], np.ndarray] = _load(self.path, with_run=False)

    def __contains__(self, key: CellKey) -> bool:
        return key in self.packed

    def put(self, key: CellKey, correct: np.ndarray) -> None:
        """Store one cell's vector and rewrite the file (atomically)."""
        self.packed[key] = pack(correct)
        _save(self.path, self.packed)


PerImage = dict[RowKey, np.ndarray]  # row key -> boolean vector (True = correct)


def load_run(run_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> PerImage:
    """Vectors of the rows of one run directory that announce one (`per_image` true)."""
    packed = _load(Path(run_dir) / RUN_FILE, with_run=False)
    out: PerImage = {}
    for row in rows:
        if has_vector(row) and cell_key(row) in packed:
            out[row_key(row)] = unpack(packed[cell_key(row)], int(row["n"]))
    return out


def load_results(results_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> PerImage:
    """Vectors of a results directory's rows (from its per_image.npz, if any)."""
    packed = _load(Path(results_dir) / RESULTS_FILE, with_run=True)
    out: PerImage = {}
    for row in rows:
        if has_vector(row) and row_key(row) in packed:
            out[row_key(row)] = unpack(packed[row_key(row)], int(row["n"]))
    return out


def save_results(results_dir: str | Path, vectors: PerImage) -> Path | None:
    """Write every vector of a report into results_dir/per_image.npz (None if there are none)."""
    if not vectors:
        return None
    path = Path(results_dir) / RESULTS_FILE
    _save(path, {key: pack(value) for key, value in vectors.items()})
    return path


def has_vector(row: Mapping[str, Any]) -> bool:
    """Whether a row announces a stored per-image vector (false for older rows)."""
    value = row.get("per_image")
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return isinstance(value, str) and value.strip().lower() == "true"  # as read back from CSV
