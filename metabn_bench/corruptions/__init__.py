"""The corruption engine: 15 common + 4 extra corruptions as batched torch ops.

Importing this package registers every implemented op (one module per family).
"""

from metabn_bench.corruptions import blur, digital, noise, spatter, weather  # noqa: F401  (registration)
from metabn_bench.corruptions.names import ALL, COMMON, EXTRA, GROUPS
from metabn_bench.corruptions.registry import CORRUPTIONS, get, to_uint8

__all__ = ["ALL", "COMMON", "CORRUPTIONS", "EXTRA", "GROUPS", "get", "to_uint8"]
