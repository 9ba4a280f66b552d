"""The corrupted-set store: the released CIFAR-10-C layout plus a manifest.

Layout of a set directory:
- `<corruption>.npy`: (S*N, H, W, 3) uint8, severity-major (rows (k)*N .. (k+1)*N-1 hold the
  k-th severity of `severities`, images in test-set order); S = 5 in a full set.
- `labels.npy`: the N test labels tiled 5 times, (5*N,) as released.
- `clean.npy`: the N clean test images (ours; lets evaluation run from the set alone).
- `manifest.json`: dataset, size preset, parameter-table hash, seed, versions, sha256 per file.
Sets from the original CIFAR-10-C / CIFAR-100-C release have no manifest and load too.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metabn_bench import fsio
from metabn_bench.corruptions.names import KNOWN, SEVERITIES, canonical_order
from metabn_bench.data.specs import read_npy
from metabn_bench.errors import UserError

FORMAT = "metabn-bench corrupted set v1"
MANIFEST = "manifest.json"
PARTS = ".parts"


@dataclass
class CorruptedSet:
    """A validated corrupted set, read lazily (memory-mapped) one cell at a time."""

    root: Path
    n: int
    severities: tuple[int, ...]
    labels: np.ndarray
    corruptions: list[str]
    manifest: dict[str, Any] | None
    ignored: list[str] = field(default_factory=list)

    @property
    def set_id(self) -> str:
        """A stable identifier of the set's content (manifest hash, or file sizes if released)."""
        if self.manifest is not None:
            return str(self.manifest.get("set_id", "unknown"))
        sizes = ",".join(f"{c}:{(self.root / f'{c}.npy').stat().st_size}" for c in self.corruptions)
        return "released-" + fsio.sha256_text(sizes)[:12]

    @property
    def source(self) -> str:
        """The data source label of the clean images the set was made from."""
        if self.manifest is None:
            return f"released corrupted set at {self.root} (no manifest)"
        return str(self.manifest.get("dataset", {}).get("source", "unknown"))

    def cell(self, corruption: str, severity: int) -> np.ndarray:
        """The N images of one (corruption, severity) cell, (N, H, W, 3) uint8 (memory-mapped)."""
        if corruption not in self.corruptions:
            raise UserError(f"corruption '{corruption}' is not in set {self.root}; "
                            f"it holds: {', '.join(self.corruptions)}")
        if severity not in self.severities:
            raise UserError(f"severity {severity} is not in set {self.root}; "
                            f"it holds: {', '.join(map(str, self.severities))}")
        k = self.severities.index(severity)
        arr = np.load(self.root / f"{corruption}.npy", mmap_mode="r")
        return arr[k * self.n:(k + 1) * self.n]

    def clean(self) -> np.ndarray | None:
        """The clean test images if the set stores them (sets made by this package do)."""
        path = self.root / "clean.npy"
        return np.load(path, mmap_mode="r") if path.exists() else None


def _check_array(arr: np.ndarray, rows: int, where: str, image_shape: tuple[int, ...] | None) -> None:
    if arr.dtype != np.uint8:
        raise UserError(f"{where}: expected uint8 images, got {arr.dtype}")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise UserError(f"{where}: expected shape ({rows}, H, W, 3), got {arr.shape}")
    if arr.shape[0] != rows:
        raise UserError(f"{where}: expected {rows} rows, got {arr.shape[0]}")
    if image_shape is not None and arr.shape[1:] != image_shape:
        raise UserError(f"{where}: image shape {arr.shape[1:]} differs from {image_shape}")


def open_set(root: str | Path, verify: bool = True, allow_partial: bool = False) -> CorruptedSet:
    """Open and validate a corrupted set (ours with manifest.json, or a released one without).

    Checks shapes, dtype, label count and tiling, and (verify=True) every file's sha256 against
    the manifest. A set whose `corrupt` was interrupted (the manifest plans corruptions that
    are not made yet) is refused unless `allow_partial`. Any problem is a one-line UserError.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"corrupted set directory '{root}' does not exist "
                        "(make one with: metabn-bench corrupt --dataset SPEC --out DIR)")
    manifest = _read_manifest(root)
    labels_all = read_npy(root / "labels.npy", f"corrupted set {root}")
    if labels_all.ndim != 1 or not np.issubdtype(labels_all.dtype, np.integer):
        raise UserError(f"{root}/labels.npy: expected a 1-D integer array, got {labels_all.dtype} "
                        f"{labels_all.shape}")
    if labels_all.shape[0] % 5:
        raise UserError(f"{root}/labels.npy: {labels_all.shape[0]} labels is not 5 x N")
    n = labels_all.shape[0] // 5
    labels = np.asarray(labels_all[:n], dtype=np.int64)
    if not np.array_equal(np.asarray(labels_all), np.tile(labels, 5)):
        raise UserError(f"{root}/labels.npy: labels are not the N test labels tiled 5 times")
    if manifest is not None:
        severities = tuple(manifest.get("severities", SEVERITIES))
        if int(manifest.get("n", n)) != n:
            raise UserError(f"{root}: manifest says n={manifest['n']} but labels.npy holds {n}")
        names = [c for c, e in manifest["files"].items() if e.get("kind") == "corruption"]
        missing = [c for c in planned_corruptions(manifest) if c not in names]
        if missing and not allow_partial:
            raise UserError(
                f"corrupted set '{root}' is incomplete: {len(names)} of "
                f"{len(names) + len(missing)} corruptions made, missing {', '.join(missing)}; "
                "run the same corrupt command again to finish it")
    else:
        severities = SEVERITIES
        names = [p.stem for p in root.glob("*.npy") if p.stem in KNOWN]
        if verify:
            warnings.warn(f"'{root}' has no {MANIFEST}: read as a released set (CIFAR-10-C "
                          "layout), so no file is checked against a hash; a set made by "
                          "metabn-bench corrupt always has one", stacklevel=2)
    ignored = sorted(p.name for p in root.glob("*.npy")
                     if p.stem not in names and p.stem not in ("labels", "clean"))
    image_shape = None
    for name in canonical_order(names):
        arr = read_npy(root / f"{name}.npy", f"corrupted set {root}")
        _check_array(arr, len(severities) * n, f"{root}/{name}.npy", image_shape)
        image_shape = arr.shape[1:]
    clean = root / "clean.npy"
    if clean.exists():
        _check_array(read_npy(clean, f"corrupted set {root}"), n, str(clean), image_shape)
    if not names:
        raise UserError(f"{root}: no corruption files found (expected e.g. gaussian_noise.npy)")
    if verify and manifest is not None:
        verify_hashes(root, manifest)
    return CorruptedSet(root, n, severities, labels, canonical_order(names), manifest, ignored)


def planned_corruptions(manifest: dict[str, Any]) -> list[str]:
    """The corruptions a set's `corrupt` commands asked for (done or not), canonical order.

    Manifests record them under "planned"; older ones only hold the command's config, whose
    empty list means every implemented common corruption (and the extras with extras=true).
    """
    if "planned" in manifest:
        return canonical_order(list(manifest["planned"]))
    cfg = manifest.get("config") or {}
    named = cfg.get("corruptions") or []
    if named:
        return canonical_order([c for c in named if c in KNOWN])
    from metabn_bench.corruptions import names as cnames
    from metabn_bench.corruptions import registry

    if cfg.get("benchmark") == "c-bar":  # the ten of the -C-bar table the set was made with
        pool = cnames.CBAR_IMAGENET if manifest.get("preset") == "imagenet" else cnames.CBAR_CIFAR
    else:
        pool = cnames.ALL if cfg.get("extras") else cnames.COMMON
    return canonical_order([c for c in pool if c in registry.CORRUPTIONS])


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    import json

    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); regenerate the set with "
                        "metabn-bench corrupt") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a {FORMAT} manifest")
    _check_manifest(path, data)
    return data


def _check_manifest(path: Path, data: dict[str, Any]) -> None:
    """Every field open_set and verify_hashes read has the right type (else one UserError)."""
    def bad(field_name: str, valid: str) -> UserError:
        return UserError(f"{path}: field '{field_name}' is malformed ({data.get(field_name)!r:.80}); "
                         f"valid: {valid}; regenerate the set with metabn-bench corrupt")

    files = data.get("files")
    if not isinstance(files, dict):
        raise bad("files", "an object of {name: {file, kind, bytes, sha256}}")
    for name, entry in files.items():
        ok = (isinstance(entry, dict) and isinstance(entry.get("file"), str)
              and "/" not in entry["file"] and entry["file"] not in ("", ".", "..")
              and isinstance(entry.get("kind"), str)
              and isinstance(entry.get("bytes"), int) and not isinstance(entry["bytes"], bool)
              and isinstance(entry.get("sha256"), str))
        if not ok:
            raise bad("files", f"for '{name}' an object with file (a name in the set), kind, "
                               "bytes (integer) and sha256")
    sev = data.get("severities", list(SEVERITIES))
    if (not isinstance(sev, list) or not sev
            or any(isinstance(s, bool) or s not in SEVERITIES for s in sev)):
        raise bad("severities", "a list of some of 1, 2, 3, 4, 5")
    n = data.get("n", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise bad("n", "a non-negative integer")
    planned = data.get("planned", [])
    if not isinstance(planned, list) or any(c not in KNOWN for c in planned):
        raise bad("planned", "a list of corruption names")
    if not isinstance(data.get("set_id", ""), str):
        raise bad("set_id", "a string")


def verify_hashes(root: Path, manifest: dict[str, Any]) -> None:
    """Compare every file's sha256 with the manifest; UserError naming the first mismatch."""
    for name, entry in manifest.get("files", {}).items():
        path = root / entry["file"]
        if not path.exists():
            raise UserError(f"{root}: {entry['file']} is listed in the manifest but missing")
        if path.stat().st_size != entry["bytes"] or fsio.sha256_file(path) != entry["sha256"]:
            raise UserError(f"{root}: {entry['file']} does not match its manifest hash "
                            f"(modified or truncated); regenerate {name}")


KEEP_CELL_BYTES = 1 << 30  # per corruption: all CIFAR and Tiny-ImageNet sets, not ImageNet's


class SetWriter:
    """Writes a corrupted set incrementally, resumable at (corruption, severity) granularity.

    Each finished cell is saved atomically under `.parts/`; when a corruption's severities are
    all there they are joined into `<corruption>.npy` (atomically) and the manifest is updated.
    A re-run skips finished corruptions and cells; a different set in the same directory
    (other data, preset, seed or severities) is refused.
    """

    def __init__(self, root: str | Path, clean_images: np.ndarray, labels: np.ndarray,
                 identity: dict[str, Any], extra_meta: dict[str, Any],
                 planned: list[str] | None = None) -> None:
        self.root = Path(root)
        self.n = int(labels.shape[0])
        self.severities = tuple(identity["severities"])
        self.identity = identity
        self.set_id = fsio.sha256_text(fsio.dumps(identity, indent=None))[:16]
        existing = _read_manifest(self.root) if self.root.is_dir() else None
        if existing is not None and existing.get("set_id") != self.set_id:
            raise UserError(
                f"'{self.root}' holds a different corrupted set (other data, preset, seed or "
                "severities); choose another --out or delete it")
        if existing is None and self.root.is_dir() and any(self.root.glob("*.npy")):
            raise UserError(f"'{self.root}' already holds .npy files without a manifest; "
                            "choose an empty --out directory")
        self.manifest: dict[str, Any] = existing or {
            "format": FORMAT, "set_id": self.set_id, **identity, **extra_meta, "files": {}}
        fsio.ensure_dir(self.root, "corrupted set directory")
        self._cells: dict[tuple[str, int], np.ndarray] = {}
        # what this and earlier commands asked for: open_set refuses the set until all are made
        before = planned_corruptions(self.manifest) if existing is not None else []
        wanted = canonical_order(list(dict.fromkeys([*before, *(planned or [])])))
        changed = self.manifest.get("planned") != wanted
        self.manifest["planned"] = wanted
        if "labels" not in self.manifest["files"]:
            self._add("labels", "labels.npy", [np.tile(labels.astype(np.int64), 5)], "labels")
            self._add("clean", "clean.npy", [clean_images], "clean")
            self._save_manifest()
        elif changed:
            self._save_manifest()

    def _add(self, name: str, filename: str, blocks: list[np.ndarray], kind: str) -> None:
        path = self.root / filename
        digest = fsio.save_npy_blocks(path, blocks)
        self.manifest["files"][name] = {"file": filename, "kind": kind,
                                        "bytes": path.stat().st_size, "sha256": digest}

    def _save_manifest(self) -> None:
        fsio.write_json(self.root / MANIFEST, self.manifest)

    def _part(self, corruption: str, severity: int) -> Path:
        return self.root / PARTS / f"{corruption}-s{severity}.npy"

    def is_done(self, corruption: str) -> bool:
        """Whether `<corruption>.npy` is complete and listed in the manifest."""
        return corruption in self.manifest["files"] and (self.root / f"{corruption}.npy").exists()

    def has_cell(self, corruption: str, severity: int) -> bool:
        """Whether one (corruption, severity) cell is already saved (for resuming)."""
        return self.is_done(corruption) or self._part(corruption, severity).exists()

    def write_cell(self, corruption: str, severity: int, images: np.ndarray) -> None:
        """Save one finished cell, (N, H, W, 3) uint8."""
        if images.shape[0] != self.n or images.dtype != np.uint8:
            raise ValueError(f"cell {corruption}/{severity}: bad array {images.dtype} {images.shape}")
        fsio.save_npy(self._part(corruption, severity), images)
        # Kept until the corruption is joined, which then reads no part back from disk; not
        # at ImageNet size, where one corruption's cells are tens of GB.
        if images.nbytes * len(self.severities) <= KEEP_CELL_BYTES:
            self._cells[(corruption, severity)] = images

    def finish(self, corruption: str, params: list[Any]) -> None:
        """Join the severities of `corruption` into `<corruption>.npy` and record it."""
        parts = [self._part(corruption, s) for s in self.severities]
        blocks = [self._cells.pop((corruption, s), None) for s in self.severities]
        blocks = [np.load(p) if b is None else b for p, b in zip(parts, blocks)]
        self._add(corruption, f"{corruption}.npy", blocks, "corruption")
        self.manifest.setdefault("params", {})[corruption] = params
        self._save_manifest()
        for p in parts:
            p.unlink()
        parts_dir = self.root / PARTS
        if parts_dir.exists() and not any(parts_dir.iterdir()):
            os.rmdir(parts_dir)

    def clear_parts(self) -> None:
        """Remove leftover cells (used when a set is deliberately regenerated)."""
        shutil.rmtree(self.root / PARTS, ignore_errors=True)
