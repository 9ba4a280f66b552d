"""The evaluation journal: each finished cell saved in time linear in the cells, not quadratic.

Rewriting all of eval.jsonl and recompressing all of per_image.npz after every cell costs time
that grows with the cells already stored, so a full evaluation was quadratic in its cells. An
evaluation instead appends each finished cell to a journal in RUN_DIR/.eval-journal/:

1. the cell's packed per-image vector and confidences, one small .npz part file written
   atomically (temporary name, then rename; fsync'd);
2. then its row, one line of `rows.jsonl` naming that part, appended with flush + fsync.

So a part is durable before the line that announces it, exactly as per_image.npz is durable
before the row of eval.jsonl that announces it. `consolidate` folds the journal into
per_image.npz and then eval.jsonl (each rewritten atomically, once) and only then deletes the
journal; the evaluation does this at the end of each protocol, stream and sweep size, at its
own end (also when it fails) and, before anything else, for whatever a killed evaluation left.
A journal line whose part file is missing is dropped (its cell is evaluated again), and so is a
torn last line (the append a kill interrupted). Consolidating twice gives the same files, so a
kill during consolidation is safe too. Readers (report, analysis, the gate) only ever read the
consolidated files and never need to know about the journal.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metabn_bench import fsio, runs
from metabn_bench.data import per_image
from metabn_bench.errors import UserError
from metabn_bench.runs import EVAL_FILE

JOURNAL_DIR = ".eval-journal"
ROWS_FILE = "rows.jsonl"


@dataclass
class Entry:
    """One cell in the journal: its row and, when the row announces one, its packed vector."""

    row: dict[str, Any]
    packed: np.ndarray | None = None  # np.packbits of the per-image correctness
    confidence: np.ndarray | None = None  # float16 per image


def merge(on_disk: list[dict[str, Any]], ours: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows on disk plus ours, one per cell (ours win; new cells after the old, in order): a row
    written meanwhile by anything that does not take the lock is kept, not overwritten."""
    merged = {per_image.cell_key(r): r for r in on_disk}
    merged.update({per_image.cell_key(r): r for r in ours})
    return list(merged.values())


class Journal:
    """The journal of one run directory. Use only while holding the directory's lock."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.dir = self.out / JOURNAL_DIR
        self.rows_path = self.dir / ROWS_FILE
        self._next = 0  # the number of the next part file

    def add(self, row: dict[str, Any], correct: np.ndarray | None = None,
            confidence: np.ndarray | None = None) -> None:
        """Journal one finished cell: its vector (if any) durable first, then its row."""
        fsio.ensure_dir(self.dir)
        part = None
        if correct is not None:
            if confidence is not None and np.shape(confidence) != np.shape(correct):
                raise ValueError(f"{np.size(confidence)} confidences for {np.size(correct)} images")
            part = f"{self._next:07d}.npz"
            self._next += 1
            arrays = {"bits": per_image.pack(correct)}
            if confidence is not None:
                arrays["conf"] = np.asarray(confidence, dtype=np.float16)
            with fsio.atomic_open(self.dir / part, "wb") as fh:
                np.savez(fh, **arrays)  # small and written once: not worth compressing
        line = fsio.dumps({"part": part, "row": row}, indent=None) + "\n"
        try:
            # append mode creates the file with the umask's mode, as open() does elsewhere
            with open(self.rows_path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise fsio.disk_full(exc, self.rows_path) or exc from None

    def entries(self) -> list[Entry]:
        """The journal's complete cells, in the order they were added (a torn last line and a
        line whose part file is missing are left out)."""
        if not self.rows_path.exists():
            return []
        text = self.rows_path.read_text(encoding="utf-8", errors="replace")
        # Every complete line ends in a newline; what follows the last one is a torn append.
        lines = text.split("\n")[:-1]
        found = []
        for i, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
                row, part = item["row"], item["part"]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{self.rows_path}: line {i} is not a journal line; delete "
                                f"{self.dir} and run evaluate again") from None
            if part is None:
                found.append(Entry(row))
                continue
            try:
                with np.load(self.dir / part, allow_pickle=False) as data:
                    conf = data["conf"] if "conf" in data.files else None
                    found.append(Entry(row, data["bits"], conf))
            except FileNotFoundError:
                continue  # a part lost after its line: the cell is evaluated again
        return found

    def consolidate(self, extra: Iterable[Entry] = ()) -> list[dict[str, Any]]:
        """Fold the journal (and `extra` cells) into per_image.npz and eval.jsonl, each
        rewritten atomically once, then empty the journal; returns all rows on disk."""
        entries = [*self.entries(), *extra]
        if not entries:
            self.clear()
            return runs.read_eval_rows(self.out / EVAL_FILE)
        with_vectors = [e for e in entries if e.packed is not None]
        if with_vectors:
            # Vectors first: each is on disk before the row that announces it.
            vectors = per_image.RunVectors(self.out)
            for e in with_vectors:
                vectors.add_packed(per_image.cell_key(e.row), e.packed, e.confidence)
            vectors.save()
        rows = merge(runs.read_eval_rows(self.out / EVAL_FILE), (e.row for e in entries))
        fsio.write_jsonl(self.out / EVAL_FILE, rows)
        self.clear()  # only now: a kill before this consolidates the same cells again
        return rows

    def clear(self) -> None:
        """Delete the journal: its rows file first (the index), then its parts."""
        with contextlib.suppress(FileNotFoundError):
            self.rows_path.unlink()
        if self.dir.is_dir():
            for path in self.dir.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            with contextlib.suppress(OSError):
                self.dir.rmdir()
        self._next = 0
