"""Shift proxies: how Meta-BN's meta-test view is made from the meta-train view.

- `augmix` (default): AugMix chains (Hendrycks et al., ICLR 2020) with the ops that do not
  overlap the 15 test corruptions, so the test corruptions stay unseen.
- `validation_corruptions`: the 4 extra corruptions of Hendrycks & Dietterich (ICLR 2019;
  speckle_noise, gaussian_blur, spatter, saturate), one random (corruption, severity) per
  batch. They are the benchmark's validation corruptions; results trained with them must say so.
- `clean`: no shift proxy, a control: the meta-test view is the meta-train view itself, so the
  Meta-BN layers and their auxiliary nets are trained on clean data only.

Randomness comes from torch's global generator, which the training loop seeds per
(seed, epoch), so a resumed run draws the same views.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from metabn_bench.corruptions import EXTRA, tables
from metabn_bench.corruptions import ops as corruption_registry
from metabn_bench.corruptions.ops import CORRUPTIONS
from metabn_bench.corruptions.rng import ImageRandom
from metabn_bench.errors import UserError

PROXIES = ("augmix", "validation_corruptions", "clean")
Proxy = Callable[[Tensor], Tensor]  # [0, 1] NCHW -> [0, 1] NCHW of the same shape


def validation_corruptions() -> list[str]:
    """The extra (validation) corruptions implemented in this installation."""
    return [name for name in EXTRA if name in CORRUPTIONS]


def check_proxy(name: str) -> None:
    """A UserError unless `name` is a proxy that can run here."""
    if name not in PROXIES:
        raise UserError(f"unknown shift proxy '{name}'; valid: {', '.join(PROXIES)}")
    if name == "validation_corruptions" and not validation_corruptions():
        raise UserError("shift proxy 'validation_corruptions' needs at least one of the extra "
                        f"corruptions ({', '.join(EXTRA)}) implemented; implemented now: "
                        f"{', '.join(CORRUPTIONS.names())}")
    if name == "augmix":
        try:
            from metabn_bench.data import augmix  # noqa: F401
        except ImportError:
            raise UserError("shift proxy 'augmix' needs metabn_bench.data.augmix, which this "
                            "installation lacks; use proxy=validation_corruptions") from None


def _augmix_proxy(severity: int) -> Proxy:
    from metabn_bench.data.augmix import augmix

    def proxy(x: Tensor) -> Tensor:
        return augmix(x, None, severity=severity)

    return proxy


def corrupt_like_test_sets(x: Tensor, name: str, severity: int, seed: int) -> Tensor:
    """Corruption `name` at `severity` on a [0, 1] batch, quantised like the stored test sets."""
    preset, _ = tables.choose_preset("auto", x.shape[-1])
    params = tables.table(preset)[name][severity - 1]
    rng = ImageRandom(seed, name, severity, range(x.shape[0]), x.device)
    out = corruption_registry.get(name).op(x.float(), params, rng)
    # Quantise like the stored test sets (uint8 by truncation), back to [0, 1].
    return corruption_registry.to_uint8(out).to(x.dtype).div_(255.0)


def corruption_proxy(name: str) -> Proxy:
    """One (validation) corruption at a random severity per batch."""

    def proxy(x: Tensor) -> Tensor:
        draw = torch.randint(0, 1 << 62, (2,))  # severity, per-image seed
        return corrupt_like_test_sets(x, name, 1 + int(draw[0]) % 5, int(draw[1]))

    return proxy


def _validation_corruption_proxy() -> Proxy:
    names = validation_corruptions()

    def proxy(x: Tensor) -> Tensor:
        draw = torch.randint(0, 1 << 62, (3,))  # corruption, severity, per-image seed
        name = names[int(draw[0]) % len(names)]
        return corrupt_like_test_sets(x, name, 1 + int(draw[1]) % 5, int(draw[2]))

    return proxy


def _identity(x: Tensor) -> Tensor:
    return x


def make_proxy(name: str, severity: int = 3) -> Proxy:
    """The proxy `name`; `severity` is AugMix's operation severity (1..10)."""
    check_proxy(name)
    if name == "clean":
        return _identity
    if name == "augmix":
        return _augmix_proxy(severity)
    return _validation_corruption_proxy()
