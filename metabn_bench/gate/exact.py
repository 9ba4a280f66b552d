"""The gate's exact tier: what the code computes without training a model from scratch.

Three fingerprints of a preset (the smoke suite), each of which a real bug moves and a
different CPU does not (or only by the measured amount, see noise.py):

- `corrupted.json`: the sha256 of every file of the preset's corrupted test set;
- `summary.json`: the committed reference checkpoints (one per method, in
  `reference/models/`) evaluated on that set under every protocol of the preset, and
  summarised by the same report code as a suite: test-time protocols, corruption tables,
  labels and the mCE arithmetic, with no training in the loop;
- `training.json`: per method, a few training steps from the seeded initialisation on a fixed
  subset (loss, the method's logged loss terms, and the size of the weight update): what a
  method's loss and augmentations compute;
- `adaptation.json`: per reference checkpoint, twenty Tent steps on one corrupted cell (the
  entropy afterwards, the size of the BN affine update) and BN adaptation's statistics shift:
  what the test-time protocols' optimiser and options compute, which the summary alone sees
  only through the few steps a smoke cell allows;
- `corrupted_stats.json`: per corrupted file and severity, the mean absolute difference from the
  clean images (uint8 units): what a severity table sets, in a form that a last-bit difference
  between CPUs moves by ~1e-4 where the file's sha256 changes completely.

Training a model from scratch amplifies last-bit differences between CPUs into a different
model, so those numbers belong to the statistical tier (the suite's own summary.json).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metabn_bench import fsio
from metabn_bench.config import SuiteConfig, replace
from metabn_bench.corruptions.generate import corrupt_dataset
from metabn_bench.data.loader import batches, to_float
from metabn_bench.data.specs import load_split
from metabn_bench.data.store import open_set
from metabn_bench.errors import UserError
from metabn_bench.evaluation.evaluate import Evaluator, evaluate
from metabn_bench.evaluation.protocols import bn_layers
from metabn_bench.methods import build_method
from metabn_bench.reporting.report import build_report, collect, write_results
from metabn_bench.runs import CONFIG, DONE, ENV, METRICS, MODEL
from metabn_bench.seeding import seed_everything
from metabn_bench.suite.jobs import plan_jobs
from metabn_bench.training.loop import train

REFERENCE = "reference"  # results/<preset>/reference/: the exact tier's baseline
MODELS = "models"  # reference/models/<method>/: a run directory without its history
CORRUPTED_FILE = "corrupted.json"
TRAINING_FILE = "training.json"
ADAPTATION_FILE = "adaptation.json"
CORRUPTION_STATS_FILE = "corrupted_stats.json"
# The per-key fingerprints ({group: {key: value}}), each compared within its measured relative move.
FINGERPRINT_FILES = (TRAINING_FILE, ADAPTATION_FILE, CORRUPTION_STATS_FILE)
RUN_FILES = (CONFIG, ENV, DONE)
# A few steps on a fixed subset: enough for every loss term to reach the weights, few enough
# that float-order differences between CPUs stay near float32 resolution (noise.py measures it).
FINGERPRINT_IMAGES = 256
FINGERPRINT_BATCH = 64
# Tent's fingerprint: 20 steps (4 passes over one cell, the set's first corruption at severity 3,
# in batches of 10 at smoke size), enough for the learning rate to set the size of the update.
ADAPT_SEVERITY = 3
ADAPT_BATCH = 10
ADAPT_PASSES = 4


@dataclass(frozen=True)
class ExactTier:
    """Where one computation of the exact tier went."""

    out_dir: Path
    set_dir: Path


def save_references(runs: dict[str, Path], target: Path) -> None:
    """Copy each method's finished run (config, env, weights as float16) to target/models/.

    Half precision halves the committed bytes; the reference is whatever these weights are
    (they are loaded into float32 models), so nothing is lost for the gate.
    """
    models = target / MODELS
    shutil.rmtree(models, ignore_errors=True)
    for method, run_dir in runs.items():
        dest = models / method
        for name in RUN_FILES:
            fsio.write_bytes(dest / name, (run_dir / name).read_bytes())
        state = torch.load(run_dir / MODEL, map_location="cpu", weights_only=True)
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        with fsio.atomic_open(dest / MODEL) as fh:
            torch.save(half, fh)


def reference_methods(reference_dir: Path) -> list[str]:
    """The methods that have a committed reference checkpoint."""
    models = reference_dir / MODELS
    return sorted(p.name for p in models.iterdir() if (p / MODEL).is_file()) if models.is_dir() else []


def make_corrupted_set(cfg: SuiteConfig, set_dir: Path, device: torch.device) -> dict[str, str]:
    """The preset's corrupted test set (as the suite makes it); sha256 of each of its files."""
    data = cfg.train.data
    test = load_split(data.dataset, "test", data.data_root, cfg.corrupt.n_test, data.label)
    corrupt_dataset(test, set_dir, cfg.corrupt, device, data.dataset, False)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    return {name: entry["sha256"] for name, entry in sorted(manifest["files"].items())}


def corruption_stats(set_dir: Path) -> dict[str, dict[str, float]]:
    """Per corruption and severity: mean |corrupted - clean| over the set's pixels (uint8 units)."""
    cset = open_set(set_dir, verify=False)
    clean = cset.clean().astype(np.float64)
    return {name: {f"mad_s{s}": float(np.abs(cset.cell(name, s).astype(np.float64) - clean).mean())
                   for s in cset.severities}
            for name in cset.corruptions}


def adaptation_fingerprint(reference_dir: Path, methods: list[str], set_dir: Path,
                           work: Path) -> dict[str, dict[str, float]]:
    """Per reference checkpoint: Tent's update and entropy after 20 steps, BN's statistics shift.

    Each protocol runs with its defaults, so a wrong default (a learning rate, a prior) moves
    these numbers by far more than the CPU variants do.
    """
    cset = open_set(set_dir, verify=False)
    severity = ADAPT_SEVERITY if ADAPT_SEVERITY in cset.severities else cset.severities[-1]
    images = cset.cell(cset.corruptions[0], severity)
    out: dict[str, dict[str, float]] = {}
    for method in methods:
        run_dir = work / method
        shutil.copytree(reference_dir / MODELS / method, run_dir)
        numbers: dict[str, float] = {}
        for spec in ("tent", "bn"):
            try:
                ev = Evaluator(run_dir, torch.device("cpu"), spec)
            except UserError:  # no BatchNorm layers: the protocol does not apply
                continue
            before = _bn_state(ev.model)
            ev.protocol.reset()
            logits = torch.empty(0)
            for _ in range(ADAPT_PASSES if spec == "tent" else 1):
                for batch in batches(images, ADAPT_BATCH, torch.device("cpu")):
                    logits = ev.protocol.predict(to_float(batch, ev.fmt))
            after = _bn_state(ev.model)
            key = "affine" if spec == "tent" else "stats"
            numbers[f"{spec}_update_norm"] = math.sqrt(sum(
                float((after[key][k] - v).pow(2).sum()) for k, v in before[key].items()))
            log_p = logits.double().log_softmax(dim=1)
            numbers[f"{spec}_entropy"] = float(-(log_p.exp() * log_p).sum(dim=1).mean())
        out[method] = numbers
    return out


def _bn_state(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    # Affine parameters (what Tent updates) and running statistics (what BN adaptation sets).
    affine: dict[str, torch.Tensor] = {}
    stats: dict[str, torch.Tensor] = {}
    for i, m in enumerate(bn_layers(model)):
        if m.affine:
            affine[f"{i}.w"] = m.weight.detach().double().clone()
            affine[f"{i}.b"] = m.bias.detach().double().clone()
        stats[f"{i}.m"] = m.running_mean.double().clone()
        stats[f"{i}.v"] = m.running_var.double().clone()
    return {"affine": affine, "stats": stats}


def evaluate_references(cfg: SuiteConfig, reference_dir: Path, set_dir: Path, out_dir: Path,
                        work: Path, provenance: dict[str, Any]) -> None:
    """Evaluate every reference checkpoint on `set_dir`; the report's files go to `out_dir`."""
    methods = [m for m in reference_methods(reference_dir) if m in cfg.methods]
    if not methods:
        raise UserError(f"'{reference_dir / MODELS}' holds no reference checkpoints; "
                        "run `make baseline` to make them")
    runs = []
    for method in methods:  # evaluate writes into its run directory: work on a copy
        run_dir = work / method
        shutil.copytree(reference_dir / MODELS / method, run_dir)
        ev = cfg.eval
        evaluate(run_dir, set_dir, ev.protocols, ev.batch_size, ev.extras, "cpu",
                 verify=False, progress=False)
        runs.append(run_dir)
    found = collect(runs)
    report = build_report(found.rows, provenance, vectors=found.vectors)
    write_results(report, out_dir, f"{cfg.name}: reference checkpoints (the gate's exact tier)",
                  plots=False)


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Parameters only: BN running statistics jump from their init to the data's at the first
    # step whatever the loss, and would drown the loss terms' part of the update.
    return {k: v.detach().double().clone() for k, v in model.named_parameters()}


def training_fingerprint(cfg: SuiteConfig, work: Path) -> dict[str, dict[str, float]]:
    """Per method: the loss terms of a few training steps and the size of the weight update."""
    data = cfg.train.data
    subset = load_split(data.dataset, "train", data.data_root, FINGERPRINT_IMAGES, data.label)
    num_classes = len(subset.classes)
    out: dict[str, dict[str, float]] = {}
    for job in plan_jobs(replace(cfg, seeds=cfg.seeds[:1], method_seeds={}), work,
                         num_classes):
        tcfg = replace(job.config, epochs=1, device="cpu",
                       data=replace(job.config.data, train_size=FINGERPRINT_IMAGES),
                       optim=replace(job.config.optim, batch_size=FINGERPRINT_BATCH))
        run_dir = work / "fingerprint" / job.method
        train(tcfg, run_dir, progress=False, train_set=subset)
        seed_everything(tcfg.seed, "init")  # the initialisation train() started from
        init = _parameters(build_method(tcfg, num_classes, torch.device("cpu")).build_model())
        final = torch.load(run_dir / MODEL, map_location="cpu", weights_only=True)
        update = math.sqrt(sum(float((final[k].double() - v).pow(2).sum()) for k, v in init.items()))
        row = fsio.read_jsonl(run_dir / METRICS)[-1]
        numbers = {k: float(v) for k, v in row.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)
                   and k not in ("epoch", "lr", "seconds", "cpu_seconds", "images_per_s",
                                 "train_error")}
        out[job.method] = {**numbers, "update_norm": update}
    return out


def compute_exact_tier(cfg: SuiteConfig, reference_dir: Path, out_dir: Path,
                       provenance: dict[str, Any]) -> None:
    """Write out_dir/{corrupted.json, training.json, summary.json, cells.csv, ...}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="metabn-exact-") as tmp:
        work = Path(tmp)
        hashes = make_corrupted_set(cfg, work / "corrupted", torch.device("cpu"))
        open_set(work / "corrupted", verify=True)
        fsio.write_json(out_dir / CORRUPTED_FILE, hashes)
        fsio.write_json(out_dir / CORRUPTION_STATS_FILE, corruption_stats(work / "corrupted"))
        methods = [m for m in reference_methods(reference_dir) if m in cfg.methods]
        fsio.write_json(out_dir / ADAPTATION_FILE, adaptation_fingerprint(
            reference_dir, methods, work / "corrupted", work / "adapt"))
        fsio.write_json(out_dir / TRAINING_FILE, training_fingerprint(cfg, work / "train"))
        evaluate_references(cfg, reference_dir, work / "corrupted", out_dir, work / "eval",
                            provenance)
