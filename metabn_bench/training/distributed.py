"""Data-parallel training over several processes with torch.distributed (`torchrun`, SLURM).

The recipe's batch stays the global batch: every rank draws the same permutation of the
training set from (seed, epoch), augments the same global batch with the same generator and
keeps its own slice of it (rank r takes rows r*B/W .. (r+1)*B/W), so the ranks together see
exactly the batches a single process sees. After each backward pass the gradients are averaged
over the ranks with one all-reduce; each rank's loss is the mean over its equal share of the
batch, so the average is the gradient of the global batch's mean loss. This is what
DistributedDataParallel computes; it is done after the method's backward pass, not by wrapping
the model, so that methods which call the model several times per step, through
torch.func.functional_call or with parameters unused in some steps, run unchanged.

BatchNorm: by default every plain BatchNorm2d layer is synchronised (batch statistics over the
global batch, with gradients flowing through them), so a run on W processes computes the same
function as on one process and the number of GPUs is not part of a run's identity; normalisation
statistics are what this benchmark studies, so they must not depend on how many GPUs were used.
`sync_bn=False` keeps per-rank statistics (over B/W images; faster, different results).
A norm layer of another type that offers `synchronise(sum_over_ranks)` (Meta-BN) is given the
differentiable all-reduce and synchronises itself; other norm layers (a method's own) keep
per-rank statistics, and env.json lists them. A method that takes an inner gradient step of its
own (episodic Meta-BN) averages that gradient over the ranks with `average_over_ranks`, which
the training step hands it in the batch. Rank 0 writes every file; the others only compute.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from metabn_bench.errors import UserError
from metabn_bench.runs import ENV
from metabn_bench.seeding import seed_everything


@dataclass(frozen=True)
class Context:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sync_bn: bool = True
    device: str = "cpu"  # where collectives' tensors live

    @property
    def active(self) -> bool:
        return self.world_size > 1


_CONTEXT = Context()


def context() -> Context:
    """The current process's context."""
    return _CONTEXT


def world_size() -> int:
    """Number of processes training together (1 when not distributed)."""
    return _CONTEXT.world_size


def is_main() -> bool:
    """Whether this process writes files and shows progress (rank 0)."""
    return _CONTEXT.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_name: str = "auto", sync_bn: bool = True,
                  timeout_min: float = 30.0) -> Context:
    """Join the process group described by RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT.

    torchrun sets these; so does submitit's TorchDistributedEnvironment in SLURM jobs. On CUDA
    each process uses GPU LOCAL_RANK and NCCL; on the CPU, gloo.
    """
    global _CONTEXT
    rank = int(os.environ.get("RANK", "0"))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if size <= 1:
        _CONTEXT = Context(sync_bn=sync_bn)
        return _CONTEXT
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not use_cuda:
        raise UserError(f"device '{device_name}' requested but CUDA is not available; use auto or cpu")
    if use_cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
        device = f"cuda:{torch.cuda.current_device()}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=size,
                                timeout=dt.timedelta(minutes=timeout_min))
    _CONTEXT = Context(rank, size, local, sync_bn, device)
    return _CONTEXT


def shutdown() -> None:
    """Leave the process group (a no-op when not distributed)."""
    global _CONTEXT
    if _CONTEXT.active and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = Context(sync_bn=_CONTEXT.sync_bn)


def barrier() -> None:
    """Wait for every rank."""
    if _CONTEXT.active:
        dist.barrier()


def agree(flag: bool) -> bool:
    """Rank 0's `flag`, on every rank."""
    if not _CONTEXT.active:
        return flag
    t = torch.tensor([int(flag)], device=_CONTEXT.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def check_batch_size(batch_size: int) -> None:
    """The global batch must split evenly over the ranks (equal shares keep the mean exact)."""
    if _CONTEXT.active and batch_size % _CONTEXT.world_size:
        raise UserError(f"optim.batch_size {batch_size} does not split evenly over "
                        f"{_CONTEXT.world_size} processes; use a multiple of {_CONTEXT.world_size}")


def shard(x: Tensor) -> Tensor:
    """This rank's slice of a global batch (the whole batch when not distributed)."""
    if not _CONTEXT.active:
        return x
    share = x.shape[0] // _CONTEXT.world_size
    return x[_CONTEXT.rank * share:(_CONTEXT.rank + 1) * share]


def seed_rank(*parts: object) -> None:
    """Give each rank its own global random stream (methods' batch-level randomness).

    Rank 0 of 1 keeps the stream a single process has; with several ranks, every rank's stream
    is derived from (parts, rank) so that their shards are not augmented alike.
    """
    if _CONTEXT.active:
        seed_everything(*parts, "rank", _CONTEXT.rank)


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: every rank's output is the sum, so the gradient of
    each rank's input is the sum of the output gradients of all ranks."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are taken over the batches of all ranks.

    torch.nn.SyncBatchNorm runs only on GPUs; this one runs on any device (gloo on the CPU,
    NCCL on CUDA), so the synchronised path is the one the CPU tests check. The statistics come
    from one differentiable all-reduce of (sum, sum of squares, count), in float32 at least,
    so gradients flow through the global statistics as in a single process. Parameters and
    buffers are BatchNorm2d's, so its state_dict loads into a plain model.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _CONTEXT.active):
            return super().forward(x)
        c = self.num_features
        shape = (1, c, 1, 1)
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        # Sums of (x - K) with K = the running mean (equal on every rank, near the batch mean)
        # keep E[(x-K)^2] - E[x-K]^2 free of cancellation; K is a constant for autograd.
        shift = (self.running_mean.detach().to(xf.dtype) if self.running_mean is not None
                 else torch.zeros(c, dtype=xf.dtype, device=x.device)).view(shape)
        d = xf - shift
        count = torch.full((1,), xf.numel() / c, dtype=xf.dtype, device=x.device)
        total = _SumOverRanks.apply(torch.cat([d.sum(dim=(0, 2, 3)), (d * d).sum(dim=(0, 2, 3)),
                                               count]))
        n = total[2 * c]
        mean_d = total[:c] / n
        var = (total[c:2 * c] / n - mean_d * mean_d).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                mean = mean_d + shift.view(c)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = (d - mean_d.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _convert_bn(module: nn.Module) -> list[str]:
    """Swap every plain BatchNorm2d for SyncBatchNorm2d (same state); names of other norms."""
    others: list[str] = []
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            like = next((t for t in child.state_dict().values() if t.is_floating_point()), None)
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats,
                                   device=like.device if like is not None else None,
                                   dtype=like.dtype if like is not None else None)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync)
            continue
        if callable(getattr(child, "synchronise", None)):  # a norm layer that syncs itself
            child.synchronise(_SumOverRanks.apply)  # (Meta-BN: models/metabn.py)
        elif isinstance(child, nn.modules.batchnorm._BatchNorm) or hasattr(child, "running_mean"):
            others.append(type(child).__name__)  # batch statistics of a kind we cannot sync
        others += _convert_bn(child)
    return others


def prepare_model(model: nn.Module) -> dict[str, Any]:
    """Make a freshly built model ready for data-parallel training; returns its description.

    Synchronises plain BatchNorm2d layers (unless sync_bn is off) and copies rank 0's
    parameters and buffers to every rank.
    """
    if not _CONTEXT.active:
        return {"world_size": 1}
    per_rank: list[str] = []
    if _CONTEXT.sync_bn:
        per_rank = sorted(set(_convert_bn(model)))
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    return {"world_size": _CONTEXT.world_size, "backend": dist.get_backend(),
            "batch_norm": "synchronised over ranks" if _CONTEXT.sync_bn else "per rank",
            "per_rank_norm_layers": per_rank if _CONTEXT.sync_bn else ["all"]}


def record(run_dir: Path, info: dict[str, Any]) -> None:
    """Add how a distributed run was trained to its env.json (rank 0; nothing otherwise)."""
    env_path = Path(run_dir) / ENV
    if _CONTEXT.active and is_main() and env_path.is_file():
        from metabn_bench import fsio

        fsio.write_json(env_path, {**json.loads(env_path.read_text()), "distributed": info})


def sync_gradients(model: nn.Module) -> None:
    """Average the gradients of every parameter over the ranks (one all-reduce per step).

    A parameter with a gradient on some ranks only counts as zero on the others; one with a
    gradient on none keeps None, so the optimiser skips it as a single process would.
    """
    if not _CONTEXT.active:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                       device=_CONTEXT.device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for dtype in sorted({p.grad.dtype for p in live}, key=str):  # one all-reduce per dtype
        group = [p for p in live if p.grad.dtype == dtype]
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat)
        flat.div_(_CONTEXT.world_size)
        pos = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[pos:pos + n].view_as(p.grad))
            pos += n


def average_over_ranks(tensors: list[Tensor]) -> list[Tensor]:
    """The mean of each tensor over the ranks (the tensors themselves in one process): with
    equal shards, the mean of per-rank gradients is the gradient of the global batch's mean
    loss. One all-reduce per dtype; new tensors, the inputs are left as they are."""
    if not _CONTEXT.active or not tensors:
        return tensors
    out: list[Tensor] = [t for t in tensors]
    for dtype in sorted({t.dtype for t in tensors}, key=str):
        idx = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
        dist.all_reduce(flat)
        flat.div_(_CONTEXT.world_size)
        pos = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[pos:pos + n].view_as(tensors[i])
            pos += n
    return out


def reduce_sums(sums: dict[str, float]) -> dict[str, float]:
    """Sum each value over the ranks (epoch totals: loss x images, errors, images)."""
    if not _CONTEXT.active:
        return sums
    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=_CONTEXT.device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))
