"""`train`: one (method, config, seed) -> a run directory, resumable after interruption.

The run directory's files are those of runs.py (config.json, env.json, metrics.jsonl,
checkpoint.pt every epoch, model.pt and the `done` marker at the end). Randomness inside
epoch e depends only on (seed, e), so a run resumed from the checkpoint of epoch e-1 ends with
the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from metabn_bench import fsio, provenance, runlock, runs
from metabn_bench.config import (
    TrainConfig,
    config_hash,
    identity,
    replace,
    to_dict,
)
from metabn_bench.config_checks import check_train_config
from metabn_bench.data.arrays import ArraySet
from metabn_bench.data.augment import crop_flip
from metabn_bench.data.loader import DeviceLoader, to_float
from metabn_bench.data.specs import load_split
from metabn_bench.device import grad_scaler, memory_format, resolve_device
from metabn_bench.errors import UserError
from metabn_bench.methods import METHODS, Batch, Method, build_method
from metabn_bench.runs import CHECKPOINT, CONFIG, DONE, ENV, METRICS, MODEL, default_run_dir, load_config
from metabn_bench.seeding import generator, seed_everything
from metabn_bench.training import distributed
from metabn_bench.training.step import train_step


@dataclass
class RunInfo:
    """What `train` returns: the run directory and whether it was already finished."""

    run_dir: Path
    resumed_from: int  # epochs already done when this call started
    skipped: bool


def resolve_config(cfg: TrainConfig, num_classes: int) -> TrainConfig:
    """The config with the method's full hparams filled in (validates names and keys)."""
    method = build_method(cfg, num_classes, torch.device("cpu"))
    return replace(cfg, hparams=method.resolved_hparams())


def cosine_lambda(total_steps: int, lr: float, lr_min: float, warmup_steps: int = 0):
    """Per-step multiplier for LambdaLR: a linear warm-up over `warmup_steps` (the first step
    at lr / warmup_steps), then cosine decay from lr to lr_min over the remaining steps."""
    floor = lr_min / lr if lr > 0 else 0.0
    decay = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(step - warmup_steps, decay) / decay
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _check_same_run(run_dir: Path, cfg: TrainConfig) -> None:
    stored = load_config(run_dir)
    if identity(stored) != identity(cfg):
        raise UserError(f"run directory '{run_dir}' holds a different config "
                        f"(hash {config_hash(stored)} vs {config_hash(cfg)}); choose another --out")


def train(cfg: TrainConfig, run_dir: str | Path | None = None, runs_root: str | Path = "runs",
          progress: bool = True, train_set: ArraySet | None = None) -> RunInfo:
    """Train `cfg` into `run_dir` (default: runs/<dataset>/<method>-s<seed>-<hash>/); resume if possible."""
    check_train_config(cfg)  # before anything is loaded or written
    resolve_config(cfg, 10)  # the method's hparams too (the class count only sizes the model)
    device = resolve_device(cfg.device)
    data = train_set or load_split(cfg.data.dataset, "train", cfg.data.data_root,
                                   cfg.data.train_size, cfg.data.label)
    cfg = resolve_config(cfg, len(data.classes))
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg, runs_root)
    # Rank 0 alone locks (and writes) the run directory; other ranks of a torchrun follow it.
    lock = (runlock.exclusive(run_dir, "run directory", stage="train")
            if distributed.is_main() else contextlib.nullcontext())
    with lock:
        if (run_dir / CONFIG).exists():
            _check_same_run(run_dir, cfg)
            if (run_dir / DONE).exists():
                return RunInfo(run_dir, cfg.epochs, skipped=True)
        fsio.ensure_dir(run_dir, "run directory")
        if distributed.is_main():  # under torch.distributed, rank 0 alone writes files
            fsio.remove_stale_temporaries(run_dir)  # a killed writer's; we hold the lock
            fsio.write_json(run_dir / CONFIG, to_dict(cfg))
            env = provenance.environment(device)
            env["data"] = {"source": data.source, "n_train": len(data),
                           "classes": list(data.classes), **data.notes}
            fsio.write_json(run_dir / ENV, env)
        return _fit(cfg, data, run_dir, device, progress and distributed.is_main())


def _train_prerequisite(cfg: TrainConfig, run_dir: Path, data: ArraySet,
                        progress: bool) -> Path | None:
    """Train (or find finished) the run the method needs first, inside RUN_DIR; its directory.

    It runs before this run's own seeding, and every run seeds itself, so the method's run
    gets the same weights as when the prerequisite was finished long before.
    """
    needed = METHODS.get(cfg.method).prerequisite(cfg)
    if needed is None:
        return None
    return train(needed.config, run_dir / needed.name, progress=progress, train_set=data).run_dir


def _fit(cfg: TrainConfig, data: ArraySet, run_dir: Path, device: torch.device,
         progress: bool) -> RunInfo:
    prerequisite = _train_prerequisite(cfg, run_dir, data, progress)
    seed_everything(cfg.seed, "init")
    method = build_method(cfg, len(data.classes), device)
    fmt = memory_format(device, cfg.channels_last)
    model = method.build_model().to(device, memory_format=fmt)
    # post_hoc Meta-BN loads and freezes its backbone here, before ranks synchronise weights
    method.prepare_training(model, prerequisite)
    distributed.record(run_dir, distributed.prepare_model(model))
    distributed.check_batch_size(cfg.optim.batch_size)
    loader = DeviceLoader(data.images, data.labels, cfg.optim.batch_size, device, seed=cfg.seed)
    if len(loader) == 0:
        raise UserError(f"training set of {len(data)} images is smaller than one batch")
    o = cfg.optim
    optimizer = torch.optim.SGD(method.parameter_groups(model), lr=o.lr, momentum=o.momentum,
                                nesterov=o.nesterov, weight_decay=o.weight_decay)
    total = cfg.epochs * len(loader)
    warmup = round(o.warmup_epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  cosine_lambda(total, o.lr, o.lr_min, warmup))
    scaler = grad_scaler(device, cfg.amp)
    start = 0
    ckpt_path = run_dir / CHECKPOINT
    history = fsio.read_jsonl(run_dir / METRICS)
    if ckpt_path.exists():
        state = runs.load_tensors(ckpt_path, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        method.load_state_dict(state["method"])
        start = int(state["epoch"]) + 1
    history = [row for row in history if row["epoch"] < start]
    for epoch in range(start, cfg.epochs):
        row = _epoch(method, model, loader, optimizer, scheduler, scaler, cfg, device, fmt,
                     epoch, progress)
        history.append(row)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "method": method.state_dict(), "epoch": epoch}
        if distributed.is_main():
            with fsio.atomic_open(ckpt_path) as fh:
                torch.save(state, fh)
            fsio.write_jsonl(run_dir / METRICS, history)
    if distributed.is_main():
        with fsio.atomic_open(run_dir / MODEL) as fh:
            torch.save(model.state_dict(), fh)
        final = history[-1] if history else {}
        fsio.write_json(run_dir / DONE, {"epochs": cfg.epochs, "final": final})
        ckpt_path.unlink(missing_ok=True)  # the optimiser state is no longer needed
    distributed.barrier()  # every rank returns once the run is complete on disk
    return RunInfo(run_dir, start, skipped=False)


def _epoch(method: Method, model: torch.nn.Module, loader: DeviceLoader,
           optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, cfg: TrainConfig,
           device: torch.device, fmt: torch.memory_format, epoch: int,
           progress: bool) -> dict[str, Any]:
    """One epoch; all randomness is seeded from (seed, epoch) so resuming is exact."""
    seed_everything(cfg.seed, "epoch", epoch)
    distributed.seed_rank(cfg.seed, "epoch", epoch)
    gen = generator(device, cfg.seed, "augment", epoch)
    model.train()
    sums = {"loss": 0.0, "errors": 0.0, "seen": 0, "counted": 0}
    logs_sum: dict[str, float] = {}
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU time of every thread: a cost less moved by shared cores
    bar = tqdm(loader.epoch(epoch), total=len(loader), desc=f"{cfg.method} epoch {epoch + 1}/"
               f"{cfg.epochs}", unit="batch", disable=not progress, leave=False, dynamic_ncols=True)
    total = cfg.epochs * len(loader)
    for index, (images, labels) in enumerate(bar):
        x = crop_flip(to_float(images, fmt), cfg.data.crop_padding, cfg.data.hflip, gen)
        x, labels = distributed.shard(x), distributed.shard(labels)  # this rank's share
        progress = (epoch * len(loader) + index) / total
        out = train_step(method, model, Batch(x, labels, lr=optimizer.param_groups[0]["lr"],
                                              progress=progress), optimizer, scaler, cfg.amp)
        scheduler.step()
        n = labels.shape[0]
        loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at epoch {epoch + 1}; lower optim.lr")
        sums["loss"] += loss * n
        sums["seen"] += n
        if out.logits is not None and out.logits.shape[0] == n:
            sums["errors"] += float((out.logits.argmax(1) != labels).sum())
            sums["counted"] += n
        for key, value in out.logs.items():
            logs_sum[key] = logs_sum.get(key, 0.0) + value * n
        bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.3f}")
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    sums = distributed.reduce_sums(sums)  # totals over all ranks' shares
    logs_sum = distributed.reduce_sums(logs_sum)
    row: dict[str, Any] = {
        "epoch": epoch, "loss": sums["loss"] / sums["seen"],
        "train_error": 100 * sums["errors"] / sums["counted"] if sums["counted"] else None,
        "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "images_per_s": round(sums["seen"] / seconds, 1),
    }
    row.update({k: v / sums["seen"] for k, v in logs_sum.items()})
    return row
