"""How far the episodic inner step moves Meta-BN's meta-train statistics, against the shift of
the meta-test view that the replayed statistics are meant to preserve.

For a finished Meta-BN run (or, with --fresh, its architecture at initialisation), on batches
of `--batch` images of a uint8 image file (.npz with `images`, `labels`): per layer, the
batch statistics of the meta-train view at theta, at theta' = theta - lr grad L_tr (the inner
step), and of the meta-test view (the run's shift proxy) at theta, in z units of the theta
statistics:
  drift = mean_c |m(theta') - m(theta)| / sqrt(v(theta) + eps)   (what replaying statistics
          recorded at theta adds to the meta-test pass's shift; `replay_weights=theta`)
  shift = mean_c |m_proxy(theta) - m(theta)| / sqrt(v(theta) + eps)
and the same for the log-std. A ratio drift / shift near or above 1 means that statistics
recorded at theta describe the inner step as much as the proxy.

    .venv/bin/python benchmarks/metabn_replay_drift.py RUN_DIR --images IMAGES.npz [--fresh]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Import this checkout's package (a script's sys.path[0] is benchmarks/, not the repository).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from metabn_bench.evaluation.trained import load_trained
from metabn_bench.methods.metabn import parameters_replaced
from metabn_bench.models.metabn import meta_bn_layers, recording_statistics


def measure(run_dir: Path, images: Path, batch: int, batches: int, lr: float,
            fresh: bool) -> np.ndarray:
    """Rows (layer, mean drift, mean shift, log-std drift, log-std shift), one per batch."""
    run = load_trained(run_dir, torch.device("cpu"), channels_last=False)
    method, model = run.method, run.model
    if fresh:
        torch.manual_seed(0)
        model = method.build_model()
    model.train()
    layers = meta_bn_layers(model)
    for m in layers:
        m.momentum = 0.0  # measure without moving the running statistics
    with np.load(images) as data:
        pixels, labels = data["images"], data["labels"]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for b in range(batches):
        idx = torch.randperm(len(labels), generator=gen)[:batch].numpy()
        x = torch.from_numpy(pixels[idx]).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(labels[idx]).long()
        torch.manual_seed(b)
        x_train, x_test = method.normalize(x), method.normalize(method.proxy(x))
        loss = F.cross_entropy(model(x_train), y)
        at_theta = [m.recorded for m in layers]
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        fast = {n: p if g is None else p - lr * g for (n, p), g in zip(named, grads)}
        with torch.no_grad(), recording_statistics(model), parameters_replaced(model, fast):
            model(x_train)
        at_prime = [m.recorded for m in layers]
        with torch.no_grad():
            model(x_test)
        proxy = [m.recorded for m in layers]
        for i, (a, p, q) in enumerate(zip(at_theta, at_prime, proxy)):
            s = torch.sqrt(a[1] + 1e-5)

            def log_std(v: torch.Tensor) -> torch.Tensor:
                return 0.5 * torch.log(v + 1e-5)

            rows.append((i, float(((p[0] - a[0]).abs() / s).mean()),
                         float(((q[0] - a[0]).abs() / s).mean()),
                         float((log_std(p[1]) - log_std(a[1])).abs().mean()),
                         float((log_std(q[1]) - log_std(a[1])).abs().mean())))
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.1, help="inner step size")
    parser.add_argument("--fresh", action="store_true", help="the architecture at initialisation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.run_dir, args.images, args.batch, args.batches, args.lr, args.fresh)
    for layer in range(int(rows[:, 0].max()) + 1):
        m = rows[rows[:, 0] == layer].mean(0)
        print(f"layer {layer}: mean drift {m[1]:.4f} / shift {m[2]:.4f} = {m[1] / m[2]:.2f}; "
              f"log-std drift {m[3]:.4f} / shift {m[4]:.4f} = {m[3] / m[4]:.2f}")
    m = rows.mean(0)
    print(f"all layers: mean {m[1] / m[2]:.2f}, log-std {m[3] / m[4]:.2f}")


if __name__ == "__main__":
    main()
