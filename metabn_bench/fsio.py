"""Atomic file writes (temporary name, then rename) and hashing.

Nothing this package writes is ever left half-written: every file goes to a temporary name in
the same directory and is renamed into place once complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically write bytes."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write text (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON text with NumPy scalars and paths converted; keys keep their order."""
    return json.dumps(obj, indent=indent, default=_json_default, allow_nan=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write an object as indented JSON."""
    write_text(path, dumps(obj) + "\n")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Atomically (re)write a whole JSON-lines file."""
    write_text(path, "".join(dumps(r, indent=None) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (empty list if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Atomically save an array in .npy format."""
    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def save_npy_blocks(path: str | Path, blocks: list[np.ndarray]) -> str:
    """Atomically save the concatenation of `blocks` (along axis 0) as one .npy file, without
    building it in memory; returns the file's sha256, computed while writing (no re-read).

    The bytes are those np.save writes for the concatenated array (format version 1.0).
    """
    first = blocks[0]
    shape = (sum(b.shape[0] for b in blocks), *first.shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
              "shape": shape}
    h = hashlib.sha256()
    with atomic_open(path, "wb") as fh:
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, header)
        for data in [head.getvalue(), *(np.ascontiguousarray(b, first.dtype).reshape(-1)
                                        .view(np.uint8) for b in blocks)]:
            h.update(data)
            fh.write(data)
    return h.hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy encoding of an array (for hashing without touching disk)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
