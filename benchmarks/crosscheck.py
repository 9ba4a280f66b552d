"""Agreement of the torch engine with independent implementations, measured.

1. The `imagecorruptions` package (ImageNet-C table) on the same images: deterministic
   corruptions image by image (equal values, max difference), random ones in distribution
   (mean absolute change from the clean image, both engines).
2. ImageMagick's own motion blur (`convert -motion-blur`, when installed, e.g. Debian's
   imagemagick 6.9) against the engine's line kernel, on RGB images (motion_blur) and on
   grey snow layers (snow), with the angles the engine drew.

    .venv/bin/python benchmarks/crosscheck.py --n 100 [--convert /usr/bin/convert-im6.q16]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.corruptions import load_images
from metabn_bench.corruptions import ALL, reference_backend, tables
from metabn_bench.corruptions.blur import imagemagick_round
from metabn_bench.corruptions.generate import corrupt_images
from metabn_bench.corruptions.geometry import motion_blur
from metabn_bench.corruptions.ops import CORRUPTIONS

CPU = torch.device("cpu")


def against_package(images: np.ndarray) -> list[list[str]]:
    """One row per corruption and severity: how the two engines compare."""
    rows = []
    for name in ALL:
        for severity in range(1, 6):
            p = tables.params("imagenet", name, severity)
            ours = corrupt_images(images, name, severity, p, 0, CPU).astype(int)
            theirs = reference_backend.corrupt_images(images, name, severity, 0).astype(int)
            if CORRUPTIONS.get(name).random:
                change_ours = np.abs(ours - images).mean()
                change_theirs = np.abs(theirs - images).mean()
                rows.append([name, severity, "distribution", f"{change_ours:.2f}",
                             f"{change_theirs:.2f}", ""])
            else:
                diff = np.abs(ours - theirs)
                rows.append([name, severity, "image by image", f"{(diff == 0).mean() * 100:.2f}%",
                             f"max {diff.max()}", f"{diff.mean():.3f}"])
    return rows


def imagemagick(convert: str, image: np.ndarray, radius: float, sigma: float, angle: float,
                folder: str) -> np.ndarray:
    """`convert in.png -motion-blur RxS+A out.png` of one uint8 image (grey or RGB)."""
    Image.fromarray(image).save(f"{folder}/in.png")
    subprocess.run([convert, f"{folder}/in.png", "-motion-blur", f"{radius}x{sigma}{angle:+.8f}",
                    f"{folder}/out.png"], check=True)
    out = np.asarray(Image.open(f"{folder}/out.png").convert("RGB" if image.ndim == 3 else "L"))
    return out


def against_imagemagick(images: np.ndarray, convert: str) -> list[list[str]]:
    """Equal values and PSNR of the line kernel against ImageMagick, per table entry."""
    gen = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for preset in ("cifar", "tinyimagenet", "imagenet"):
            for severity in range(1, 6):
                for kind in ("motion_blur", "snow"):
                    p = tables.params(preset, kind, severity)
                    radius, sigma = (p[0], p[1]) if kind == "motion_blur" else (p[4], p[5])
                    if kind == "motion_blur":
                        batch = images
                        angles = gen.uniform(-45, 45, len(batch))
                    else:  # sparse grey flakes like a thresholded snow layer
                        layer = gen.normal(0.3, 0.3, images.shape[:3])
                        batch = (np.clip(np.where(layer < 0.6, 0, layer), 0, 1) * 255).astype(np.uint8)
                        angles = gen.uniform(-135, -45, len(batch))
                    expected = np.stack([imagemagick(convert, im, radius, sigma, a, folder)
                                         for im, a in zip(batch, angles)]).astype(float)
                    x = torch.from_numpy(batch.astype(np.float64))
                    x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x.unsqueeze(1)
                    ours = imagemagick_round(motion_blur(x, radius, sigma, torch.tensor(angles)))
                    ours = ours.permute(0, 2, 3, 1).numpy() if batch.ndim == 4 else ours[:, 0].numpy()
                    mse = ((ours - expected) ** 2).mean()
                    psnr = "identical" if mse == 0 else f"{10 * np.log10(255**2 / mse):.1f} dB"
                    rows.append([preset, severity, kind, f"{radius}x{sigma}",
                                 f"{(ours == expected).mean() * 100:.3f}%", psnr])
    return rows


def main() -> None:
    """Print both comparisons."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--convert", default=shutil.which("convert-im6.q16") or "",
                    help="ImageMagick's convert (skipped when not given or not found)")
    args = ap.parse_args()
    images, source = load_images(args.n)
    print(f"images: {source}, {len(images)}")
    print("\n1. torch engine vs imagecorruptions (ImageNet-C table)")
    print(tabulate(against_package(images), headers=["corruption", "severity", "compared",
                                                     "equal values / ours", "theirs", "mean |diff|"],
                   tablefmt="github"))
    if args.convert and Path(args.convert).exists():
        version = subprocess.run([args.convert, "-version"], capture_output=True, text=True)
        print(f"\n2. line kernel vs {version.stdout.splitlines()[0]}")
        print(tabulate(against_imagemagick(images[:40], args.convert),
                       headers=["preset", "severity", "used by", "radius x sigma", "equal values",
                                "PSNR"], tablefmt="github"))
    else:
        print("\n2. ImageMagick not found: comparison skipped (apt-get install imagemagick)")


if __name__ == "__main__":
    main()
