"""What each of 2 `torchrun` processes does for the Meta-BN data-parallel test in
tests/test_distributed.py (not a test itself).

    torchrun --standalone --nproc_per_node=2 tests/ddp_metabn_ranks.py OUT_DIR

float64 episodic Meta-BN training steps (`train_step`, SGD) of WRN-10-1: one process on the
whole batch (rank 0), 2 processes on half batches with the Meta-BN layers synchronised and the
inner step's gradients averaged, and 2 processes without either (what the code did before).
The meta-test view is a fixed transform, so that it is the same images in every case. Each rank
saves the weights it ends with to OUT_DIR/rank<r>.pt.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from metabn_bench.methods import Batch, build_method
from metabn_bench.models.metabn import auxiliary_parameters, meta_bn_layers
from metabn_bench.training import distributed
from metabn_bench.training.step import train_step
from tests.helpers import tiny_train_config

CASES = {"instance": {}, "batch": {"stats_source": "batch", "meta_test_gradient": "detached"}}


def steps(hparams: dict[str, object], shard: bool, synced: bool = True) -> dict[str, list]:
    """Three float64 episodic steps; each rank takes its shard of every batch when `shard`."""
    cfg = tiny_train_config(method="metabn", hparams=hparams)
    method = build_method(cfg, 10, torch.device("cpu"))
    method._proxy = lambda x: (x.flip(3) * 0.6 + 0.3)  # type: ignore[attr-defined]
    torch.manual_seed(0)
    model = method.build_model().double().train()
    with torch.no_grad():  # auxiliary nets that already correct
        for p in auxiliary_parameters(model):
            p.normal_(0, 0.2)
    if shard and synced:
        distributed.prepare_model(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.rand(16, 3, 32, 32, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 10, (16,), generator=gen)
        if shard:
            x, y = distributed.shard(x), distributed.shard(y)
        batch = Batch(x, y, lr=0.05)
        if shard and not synced:  # the former code: per-rank statistics and inner gradients
            real = distributed.average_over_ranks
            distributed.average_over_ranks = lambda ts: ts  # type: ignore[assignment]
            try:
                train_step(method, model, batch, opt)
            finally:
                distributed.average_over_ranks = real  # type: ignore[assignment]
        else:
            train_step(method, model, batch, opt)
    assert all(m.sum_over_ranks is not None for m in meta_bn_layers(model)) == (shard and synced)
    return {k: v.tolist() for k, v in model.state_dict().items() if v.is_floating_point()}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = distributed.init_from_env("cpu", sync_bn=True)
    result: dict[str, object] = {"rank": ctx.rank, "world": ctx.world_size}
    for name, hparams in CASES.items():
        if ctx.rank == 0:
            saved, distributed._CONTEXT = distributed._CONTEXT, distributed.Context()
            result[f"{name}/single"] = steps(hparams, shard=False)  # as one process would
            distributed._CONTEXT = saved
        result[f"{name}/synced"] = steps(hparams, shard=True)
        result[f"{name}/per_rank"] = steps(hparams, shard=True, synced=False)
    result["described"] = distributed.prepare_model(
        build_method(tiny_train_config(method="metabn"), 10, torch.device("cpu")).build_model())
    distributed._CONTEXT = dataclasses.replace(ctx)
    torch.save(result, out / f"rank{ctx.rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
