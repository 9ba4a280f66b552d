"""Every implemented corruption op, registered: import this module to use the registry.

One module per family registers its ops when imported; this module imports them all and gives
the registry's lookups, so `CORRUPTIONS` here always lists every implemented corruption.
"""

from metabn_bench.corruptions import (  # noqa: F401  (registration)
    blur,
    cbar_caustic,
    cbar_noise,
    cbar_sparkles,
    cbar_textures,
    cbar_warp,
    digital,
    noise,
    spatter,
    weather,
)
from metabn_bench.corruptions.registry import CORRUPTIONS, as_input, get, to_uint8

__all__ = ["CORRUPTIONS", "as_input", "get", "to_uint8"]
