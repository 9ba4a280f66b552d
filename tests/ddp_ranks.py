"""What each of 2 `torchrun` processes does for tests/test_distributed.py (not a test itself).

    torchrun --standalone --nproc_per_node=2 tests/ddp_ranks.py OUT_DIR

1. float64 SGD steps of WRN-10-1, one process (rank 0) vs 2 processes with synchronised and
   with per-rank BatchNorm, and a gradient present on one rank only;
2. the `train` command itself, recording every file each rank writes.
Each rank saves what it saw to OUT_DIR/rank<r>.pt for the test to check.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from metabn_bench import fsio
from metabn_bench.models import build_model
from metabn_bench.training import distributed

TRAIN_ARGS = ["train", "--method", "vanilla", "--dataset", "synthetic", "--arch", "wrn10_1",
              "--epochs", "1", "--set", "data.train_size=128", "--set", "optim.batch_size=64",
              "--set", "optim.lr=0.05", "--set", "channels_last=false", "--device", "cpu",
              "--no-progress"]


def sgd_steps(steps: int, shard: bool) -> dict[str, list]:
    """A few float64 SGD steps; each rank takes its shard of every batch when `shard`."""
    torch.manual_seed(0)
    model = build_model("wrn10_1", 10).double()
    if shard:
        distributed.prepare_model(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.rand(32, 3, 32, 32, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 10, (32,), generator=gen)
        if shard:
            x, y = distributed.shard(x), distributed.shard(y)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if shard:
            distributed.sync_gradients(model)
        opt.step()
    return {k: v.tolist() for k, v in model.state_dict().items() if v.is_floating_point()}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = distributed.init_from_env("cpu", sync_bn=True)
    result: dict[str, object] = {"rank": ctx.rank, "world": ctx.world_size}
    if ctx.rank == 0:
        saved, distributed._CONTEXT = distributed._CONTEXT, distributed.Context()
        result["single"] = sgd_steps(3, shard=False)  # as one process would
        distributed._CONTEXT = saved
    result["synced"] = sgd_steps(3, shard=True)
    distributed._CONTEXT = dataclasses.replace(ctx, sync_bn=False)
    result["per_rank"] = sgd_steps(3, shard=True)
    distributed._CONTEXT = ctx
    layer = torch.nn.Linear(2, 1)  # weight used on rank 0 only, bias on no rank
    if ctx.rank == 0:
        layer.weight.grad = torch.full_like(layer.weight, 2.0)
    distributed.sync_gradients(layer)
    result["partial_grad"] = (layer.weight.grad.tolist(), layer.bias.grad is None)

    written: list[str] = []
    real_open = fsio.atomic_open

    def recording(path, *args, **kwargs):
        written.append(str(path))
        return real_open(path, *args, **kwargs)

    fsio.atomic_open = recording  # every file the package writes goes through here
    from metabn_bench.cli import app

    app([*TRAIN_ARGS, "--out", str(out / "run")], standalone_mode=False)  # joins this group
    result["written"] = written
    torch.save(result, out / f"rank{ctx.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
