"""The first four corruptions against straightforward per-image reference computations."""

from __future__ import annotations

import io
import itertools

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from metabn_bench.corruptions import tables
from metabn_bench.corruptions.blur import disk_kernel
from metabn_bench.corruptions.generate import corrupt_images
from metabn_bench.data.synthetic import make_split
from tests.helpers import shared_lossless

CPU = torch.device("cpu")


def _images() -> list[np.ndarray]:
    sets = [make_split("test", 24).images]
    real = shared_lossless()
    if real is not None:
        sets.append(real[0][:24])
    return sets


def _ref_contrast(img: np.ndarray, c: float) -> np.ndarray:
    x = img / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.uint8(np.clip((x - means) * c + means, 0, 1) * 255)


def _ref_defocus(img: np.ndarray, radius: float, alias: float) -> np.ndarray:
    ax = np.arange(-8, 9)
    X, Y = np.meshgrid(ax, ax)
    disk = np.array(radius**2 >= X**2 + Y**2, dtype=np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias)
    x = img / 255.0
    channels = [cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]
    return np.uint8(np.clip(np.stack(channels, axis=-1), 0, 1) * 255)


def _ref_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_deterministic_corruptions_match_reference(severity: int) -> None:
    table = tables.table("cifar")
    for images in _images():
        c = table["contrast"][severity - 1]
        ours = corrupt_images(images, "contrast", severity, c, 0, CPU)
        ref = np.stack([_ref_contrast(im, c) for im in images])
        assert _max_diff(ours, ref) <= 1  # equal up to float rounding before truncation
        r, a = table["defocus_blur"][severity - 1]
        ours = corrupt_images(images, "defocus_blur", severity, (r, a), 0, CPU)
        ref = np.stack([_ref_defocus(im, r, a) for im in images])
        assert _max_diff(ours, ref) <= 1
        q = table["jpeg_compression"][severity - 1]
        ours = corrupt_images(images, "jpeg_compression", severity, q, 0, CPU)
        ref = np.stack([_ref_jpeg(im, q) for im in images])
        assert _max_diff(ours, ref) <= 1


def test_defocus_kernel_is_normalised_and_small_radii_are_gaussian() -> None:
    for r, a in tables.table("cifar")["defocus_blur"]:
        assert disk_kernel(r, a).sum() == pytest.approx(1.0)
    assert disk_kernel(0.3, 0.4).shape == (3, 3)  # r < 1: a one-pixel disk blurred 3x3


def test_gaussian_noise_std_and_batch_independence() -> None:
    images = np.full((64, 32, 32, 3), 128, np.uint8)  # mid-grey: no clipping
    for severity, std in enumerate(tables.table("cifar")["gaussian_noise"], start=1):
        out = corrupt_images(images, "gaussian_noise", severity, std, 0, CPU, batch_size=64)
        measured = (out.astype(float) - 127.5).std() / 255  # truncation shifts by 0.5
        assert measured == pytest.approx(std, rel=0.03)
        again = corrupt_images(images, "gaussian_noise", severity, std, 0, CPU, batch_size=7)
        np.testing.assert_array_equal(out, again)
    other_seed = corrupt_images(images, "gaussian_noise", 1, 0.04, 1, CPU)
    assert not np.array_equal(other_seed, corrupt_images(images, "gaussian_noise", 1, 0.04, 0, CPU))


@pytest.mark.parametrize("name", ["gaussian_noise", "contrast", "defocus_blur", "jpeg_compression"])
def test_severity_increases_the_damage(name: str) -> None:
    images = make_split("test", 40).images
    table = tables.table("cifar")[name]
    damage = [np.abs(corrupt_images(images, name, s, table[s - 1], 0, CPU).astype(float)
                     - images).mean() for s in range(1, 6)]
    assert all(b > a for a, b in itertools.pairwise(damage)), damage
