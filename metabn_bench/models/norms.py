"""Norm-layer factories: every architecture takes its normalisation from here.

A NormFactory maps a channel count to a module that behaves like BatchNorm2d (same input and
output). A UnitFactory makes an extra module that an architecture inserts in each residual
block (at the block's input, 'pre', or after the residual sum, 'post'); SelfNorm/CrossNorm use it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from metabn_bench.registry import Registry

NormFactory = Callable[[int], nn.Module]
UnitFactory = Callable[[int], nn.Module]
UNIT_POSITIONS = ("pre", "post")

NORMS: Registry[Callable[..., NormFactory]] = Registry("norm layer")


@NORMS.register("bn")
def batch_norm(momentum: float = 0.1, eps: float = 1e-5) -> NormFactory:
    """Plain BatchNorm2d (Ioffe & Szegedy 2015)."""

    def make(channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)

    return make


def make_norm(kind: str = "bn", **options: object) -> NormFactory:
    """The factory registered as `kind`, configured with `options`."""
    return NORMS.get(kind)(**options)
