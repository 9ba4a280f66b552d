"""The method registry (a name -> Method subclass map)."""

from __future__ import annotations

from metabn_bench.registry import Registry

METHODS: Registry[type] = Registry("method")
