"""The corruption engine: 15 common + 4 extra corruptions as batched torch ops.

Importing this package is light: it gives the names (names.py) and nothing else, so that the
corrupted-set store and the reporting wing learn names without loading the ops. The ops are
registered by importing `corruptions.ops` (one module per family), which also gives the
registry (`CORRUPTIONS`, `get`, `to_uint8`).
"""

from metabn_bench.corruptions.names import ALL, COMMON, EXTRA, GROUPS

__all__ = ["ALL", "COMMON", "EXTRA", "GROUPS"]
