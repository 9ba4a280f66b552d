"""Vanilla training: the Method base class, registered as `vanilla`."""

from __future__ import annotations

from metabn_bench.methods.base import Method, NoHparams
from metabn_bench.methods.registry import METHODS


@METHODS.register("vanilla")
class Vanilla(Method[NoHparams]):
    """Plain cross-entropy with the common recipe (Hendrycks et al. 2020, AugMix, Sec. 4)."""
