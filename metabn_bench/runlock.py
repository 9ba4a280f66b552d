"""Who is working on a run directory: an exclusive lock, its holder, and recorded failures.

A run directory is trained and evaluated by one process at a time. The lock is an advisory
`flock` on `<run dir>/.lock`: the kernel drops it when its process ends, however it ends
(SIGINT, SIGKILL, a crash), so a killed suite never leaves a lock that blocks the next one,
and no pid guessing is needed. `running.json` says who holds it (pid, host, stage, start
time) for `metabn-bench status`; it is only believed while the lock is actually held.
On network file systems flock works where the mount supports it (NFSv4; Lustre with
`-o flock`); where it does not, runs proceed unlocked with a warning.

Standalone `corrupt`, `train` and `evaluate` lock their output directory the same way: a
second command on the same directory while the first runs is refused at once with a one-line
error (exit 2) naming the holder, rather than waiting or racing (two `evaluate` once rewrote
eval.jsonl over each other and lost rows). Locks are re-entrant within one process, so a suite
job that holds its run directory can call `train` and `evaluate`, which lock it too.

When training or evaluation raises, `failed.json` records the stage, the exception and its
traceback; the next attempt clears it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from metabn_bench import fsio
from metabn_bench.errors import UserError

try:  # POSIX only; elsewhere runs are not locked (see `_flock`)
    import fcntl
except ImportError:  # pragma: no cover - not reachable on Linux or macOS
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
HOLDER_FILE = "running.json"
FAILED_FILE = "failed.json"

# Directories this process holds, with how many RunLock objects hold each: flock locks belong
# to an open file, so a second flock by the same process on a fresh open would fail.
_HELD: dict[Path, int] = {}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _flock(fh: IO[Any]) -> bool:
    """Try to take an exclusive lock without blocking; False if another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # the file system does not support flock
        warnings.warn(f"cannot lock {fh.name} ({exc}); two processes could work on this run",
                      stacklevel=3)
    return True


class RunLock:
    """An exclusive, non-blocking lock on one run directory (a context manager once held)."""

    def __init__(self, run_dir: str | Path, **info: Any) -> None:
        self.run_dir = Path(run_dir)
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now(), **info}
        self._fh: IO[Any] | None = None
        self._nested = False  # this process already held the directory when acquired

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fh is not None or self._nested

    def _key(self) -> Path:
        return self.run_dir.resolve()

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; False (and nothing changed) if somebody does."""
        if self.held:
            return True
        if _HELD.get(self._key(), 0) > 0:  # this process holds it already (re-entrant)
            _HELD[self._key()] += 1
            self._nested = True
            return True
        fsio.ensure_dir(self.run_dir, "run directory")
        # The lock file is never deleted: removing it while another process has it open would
        # let a third process lock a fresh file and run at the same time.
        fh = open(self.run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held until release()
        if not _flock(fh):
            fh.close()
            return False
        self._fh = fh
        _HELD[self._key()] = 1
        fsio.write_json(self.run_dir / HOLDER_FILE, self.info)
        return True

    def update(self, **info: Any) -> None:
        """Change what `running.json` says (for example the stage: train, evaluate)."""
        self.info.update(info)
        if self._fh is not None:
            fsio.write_json(self.run_dir / HOLDER_FILE, self.info)

    def release(self) -> None:
        """Give the lock up (closing the file releases the flock)."""
        if self._nested:
            self._nested = False
            _HELD[self._key()] -= 1
            return
        if self._fh is None:
            return
        _HELD.pop(self._key(), None)
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / HOLDER_FILE).unlink()
        self._fh.close()
        self._fh = None

    def __enter__(self) -> RunLock:
        if not self.acquire():
            raise RuntimeError(f"{self.run_dir} is locked by another process")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def exclusive(directory: str | Path, what: str, **info: Any) -> Iterator[RunLock]:
    """Hold `directory`'s lock for a standalone command; a one-line UserError if another
    process holds it (who, since when), so the second of two concurrent commands stops at once.
    """
    lock = RunLock(directory, **info)
    if not lock.acquire():
        who = holder(directory) or {}
        by = (f" by pid {who.get('pid')} on {who.get('host')} since {who.get('since')}"
              if who.get("pid") else "")
        raise UserError(f"{what} '{directory}' is in use{by}; wait for that command to finish "
                        "or choose another directory")
    try:
        yield lock
    finally:
        lock.release()


def holder(run_dir: str | Path) -> dict[str, Any] | None:
    """The live holder's record ({pid, host, since, stage, ...}), or None if nobody holds it.

    A `running.json` left behind by a killed process is ignored: only a held lock counts.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    if not path.exists():
        return None
    with open(path) as fh:  # read-only is enough for flock, so status needs no write access
        if _flock(fh):
            return None  # closing the file releases our probe
    try:
        return json.loads((run_dir / HOLDER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {"pid": None, "host": None, "stage": "starting"}


def record_failure(run_dir: str | Path, stage: str, exc: BaseException, **info: Any) -> None:
    """Write `failed.json`: stage, exception type and message, traceback, host, pid, time."""
    fsio.write_json(Path(run_dir) / FAILED_FILE, {
        "stage": stage, "error": type(exc).__name__, "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "host": socket.gethostname(), "pid": os.getpid(), "time": _now(), **info,
    })


def read_failure(run_dir: str | Path) -> dict[str, Any] | None:
    """The recorded failure of a run directory, or None."""
    path = Path(run_dir) / FAILED_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {"stage": "?", "error": "unreadable failed.json", "message": ""}


def clear_failure(run_dir: str | Path) -> None:
    """Forget a recorded failure (a new attempt is starting)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(run_dir) / FAILED_FILE).unlink()
