"""Atomic file writes (temporary name, then rename) and hashing.

Nothing this package writes is ever left half-written: every file goes to a temporary name in
the same directory and is renamed into place once complete. Files get the mode the user's umask
gives (0644 under umask 022), as `open()` would: `mkstemp` creates them 0600, which would make
a corrupted set or a report unreadable by the user's group on a shared machine. A full disk is
a one-line UserError naming the file ("disk full writing X"), never a raw OSError.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from metabn_bench.errors import UserError

TMP_SUFFIX = ".tmp"


def umask() -> int:
    """The process's umask (read without changing it for more than an instant)."""
    # os.umask can only be read by setting it; set it straight back. /proc is read first where
    # it exists, so threads writing files never see the momentary 0o077.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o077)
    os.umask(current)
    return current


def file_mode() -> int:
    """The mode a new regular file gets under the current umask (0o644 under umask 022)."""
    return 0o666 & ~umask()


def disk_full(exc: OSError, path: str | Path) -> UserError | None:
    """A one-line UserError for ENOSPC/EDQUOT while writing `path`; None for other errors."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"disk full writing {path}; free some space (or choose another "
                         "directory) and run the same command again")
    return None


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporaries (`.<name>.*.tmp`) that a killed writer left in `directory`.

    Only call this while holding the directory's lock: a live writer's temporary looks the same.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in directory.glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def ensure_dir(directory: str | Path, what: str = "output directory") -> Path:
    """Create `directory` (and parents); a one-line UserError if a file is in the way."""
    directory = Path(directory)
    for parent in (directory, *directory.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UserError(f"{what} '{directory}': '{parent}' is a file, not a directory; "
                                "choose a directory path")
            break
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_full(exc, directory) or UserError(
            f"cannot create {what} '{directory}': {exc.strerror or exc}") from None
    return directory


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    ensure_dir(path.parent)
    if path.is_dir():
        raise UserError(f"'{path}' is a directory; give a file name to write")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise disk_full(exc, path) or exc from None
    try:
        # mkstemp makes the file 0600 whatever the umask; give it the mode open() would have
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # Some writers (NumPy's tofile, torch's zip writer) report a full disk without errno;
        # the free space is looked at before the temporary is deleted, which frees it again.
        full = disk_full(exc, path) if isinstance(exc, OSError) else None
        if full is None and isinstance(exc, (OSError, RuntimeError)) and _no_space(path.parent):
            full = disk_full(OSError(errno.ENOSPC, "no space"), path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if full is not None:
            raise full from None
        raise


def _no_space(directory: Path) -> bool:
    """Whether the file system of `directory` has (next to) no free space left for the user."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


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
    """Rows of a JSON-lines file (empty list if it does not exist); ValueError naming the line
    for a line that is not JSON."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {i} is not JSON: {exc}") from None
    return rows


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
