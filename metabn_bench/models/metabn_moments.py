"""Per-sample, per-channel moments of a feature map: what Meta-BN's auxiliary nets read.

Apart from models/metabn.py (the layer) because the fast CPU path needs its own helpers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def instance_moments(x: Tensor, keep_grad: bool = False) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and biased variance (N, C) of x (N, C, H, W), in float32
    (float64 for a float64 x).

    Computed as E[x] and E[x^2] - E[x]^2 over a view that keeps H*W contiguous in memory for
    either layout. On the CPU, torch.var_mean over dims (2, 3) of a channels_last tensor took
    4-5x as long as a whole BatchNorm2d pass, and linalg.vector_norm about twice as long as
    this (measured). The cancellation error, ~1e-7 * (mean / std)^2 relative, is negligible
    for BN inputs.

    Without `keep_grad`, on the CPU, the sums run over chunks of samples small enough to stay
    in the L2 cache, so that x * x is never written to memory: this cut Meta-BN's eval
    overhead over BatchNorm2d by about 60% (see `benchmarks/metabn_cost.py`). Per sample the
    arithmetic is the same as over the whole batch.
    """
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        flat, dim = x.permute(0, 2, 3, 1).reshape(n, h * w, c), 1
    else:
        flat, dim = x.reshape(n, c, h * w), 2
    flat = flat if keep_grad else flat.detach()
    step = n if keep_grad else _chunk_samples(flat)
    if step >= n:
        f = flat.to(accumulation_dtype(flat))
        mean, mean_sq = f.mean(dim), (f * f).mean(dim)
    else:
        mean, mean_sq = _chunked_moments(flat, dim, step)
    return mean, (mean_sq - mean * mean).clamp_min(0)


def accumulation_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision and float32 inputs, float64 for float64 ones."""
    return torch.promote_types(x.dtype, torch.float32)


_CHUNK_BYTES = 512 * 1024  # a chunk of x and its square fit in this machine's 2 MiB of L2


def _chunk_samples(flat: Tensor) -> int:
    """Samples per chunk: as many as fit in _CHUNK_BYTES on the CPU, all of them on an
    accelerator (where a loop only adds launches)."""
    n = flat.shape[0]
    if flat.device.type != "cpu":
        return n
    per_sample = flat.numel() // max(n, 1) * 4  # float32 bytes
    return max(1, _CHUNK_BYTES // max(1, per_sample))


def _chunked_moments(flat: Tensor, dim: int, step: int) -> tuple[Tensor, Tensor]:
    """(E[x], E[x^2]) over `dim` of a 3-D view, `step` samples at a time."""
    n = flat.shape[0]
    c = flat.shape[3 - dim]  # the other non-sample dimension
    total = flat.new_empty((n, c), dtype=accumulation_dtype(flat))
    total_sq = torch.empty_like(total)
    square = flat.new_empty(flat[:step].shape, dtype=total.dtype)  # reused: no allocation
    for start in range(0, n, step):
        f = flat[start:start + step].to(total.dtype)
        sq = square[:f.shape[0]]
        torch.mul(f, f, out=sq)
        torch.sum(f, dim, out=total[start:start + step])
        torch.sum(sq, dim, out=total_sq[start:start + step])
    # torch's mean is this sum divided once by the count, so the result is mean()'s bit for bit
    count = flat.shape[dim]
    return total.div_(count), total_sq.div_(count)


def global_moments(x: Tensor, shift: Tensor, sum_over_ranks: Callable[[Tensor], Tensor]
                   ) -> tuple[Tensor, Tensor, float]:
    """(mean, biased var, count) per channel of x over every data-parallel rank's batch.

    One differentiable all-reduce (`sum_over_ranks`) of the sums of x - K and (x - K)^2 and of
    the count, in float32 at least; K = `shift` (the running mean: the same on every rank and
    near the batch mean, a constant for autograd) keeps E[(x-K)^2] - E[x-K]^2 free of
    cancellation. With one rank (the identity) these are the batch's own moments.
    """
    c = x.shape[1]
    xf = x.to(accumulation_dtype(x))
    k = shift.to(xf.dtype).view(1, c, 1, 1)
    d = xf - k
    count = torch.full((1,), xf.numel() / c, dtype=xf.dtype, device=x.device)
    total = sum_over_ranks(torch.cat([d.sum(dim=(0, 2, 3)), (d * d).sum(dim=(0, 2, 3)), count]))
    n = total[2 * c]
    mean_d = total[:c] / n
    var = (total[c:2 * c] / n - mean_d * mean_d).clamp_min(0)
    return mean_d + k.view(c), var, float(n.detach())


def normalise(x: Tensor, mean: Tensor, var: Tensor, eps: float,
              affine: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(x - mean) / sqrt(var + eps), then gamma and beta when `affine` is given; x's dtype."""
    c = x.shape[1]
    scale = torch.rsqrt(var + eps)
    shift = -mean * scale
    if affine is not None:
        scale, shift = scale * affine[0], shift * affine[0] + affine[1]
    return x * scale.view(1, c, 1, 1).to(x.dtype) + shift.view(1, c, 1, 1).to(x.dtype)
