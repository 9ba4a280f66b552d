"""Deterministic corruptions against per-image reference computations, on synthetic images and
(when ../shared is present) real CIFAR-10 test images; helpers against the libraries they mirror."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter as scipy_gaussian
from scipy.ndimage import map_coordinates

from metabn_bench.corruptions import tables
from metabn_bench.corruptions.blur import disk_kernel, imagemagick_round, scan_copy
from metabn_bench.corruptions.filters import gaussian_filter_matrix
from metabn_bench.corruptions.generate import corrupt_images
from metabn_bench.corruptions.geometry import (
    affine_from_points,
    affine_warp,
    motion_blur,
    sample_bilinear,
)
from metabn_bench.data.synthetic import make_split
from tests import corruption_reference as ref
from tests.helpers import shared_lossless

CPU = torch.device("cpu")
N = 8


def _synthetic(size: int) -> np.ndarray:
    images = make_split("test", N).images
    if size == images.shape[1]:
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
                     for im in images])


def _real() -> np.ndarray:
    real = shared_lossless()
    if real is None:
        pytest.skip("../shared/data/cifar10/test1000-lossless.npz is not here")
    return real[0][:N]


def _compare(images: np.ndarray, name: str, preset: str) -> None:
    for severity in range(1, 6):
        p = tables.params(preset, name, severity)
        ours = corrupt_images(images, name, severity, p, 0, CPU)
        expected = np.stack([ref.DETERMINISTIC[name](im, p) for im in images])
        diff = np.abs(ours.astype(int) - expected)
        # Equal up to rounding: at most one level, on a small fraction of values (float sums
        # in another order can land on the other side of an integer before truncation).
        assert diff.max() <= 1, (name, preset, severity, diff.max())
        assert (diff > 0).mean() < 0.005, (name, preset, severity, (diff > 0).mean())


@pytest.mark.parametrize("name", sorted(ref.DETERMINISTIC))
@pytest.mark.parametrize(("preset", "size"), [("cifar", 32), ("tinyimagenet", 64), ("imagenet", 32)])
def test_deterministic_match_reference_on_synthetic_images(name: str, preset: str, size: int) -> None:
    _compare(_synthetic(size), name, preset)


@pytest.mark.parametrize("name", sorted(ref.DETERMINISTIC))
def test_deterministic_match_reference_on_real_images(name: str) -> None:
    _compare(_real(), name, "cifar")


def test_defocus_kernel_is_normalised_and_small_radii_are_gaussian() -> None:
    for preset in tables.TABLES:
        for r, a in tables.table(preset)["defocus_blur"]:
            grid = np.arange(-8, 9) if r <= 8 else np.arange(-r, r + 1)
            X, Y = np.meshgrid(grid, grid)
            disk = np.array(r**2 >= X**2 + Y**2, dtype=np.float32)
            expected = cv2.GaussianBlur(disk / disk.sum(), (3, 3) if r <= 8 else (5, 5), a)
            # OpenCV's reflect-101 border folds the blur back in: the sum is 1 only while the
            # disk stays clear of the grid's edge (radius < 8).
            assert disk_kernel(r, a).sum() == pytest.approx(expected.sum(), abs=1e-6)
            if r < 8:
                assert disk_kernel(r, a).sum() == pytest.approx(1.0, abs=1e-6)
    assert disk_kernel(0.3, 0.4).shape == (3, 3)  # r < 1: a one-pixel disk blurred 3x3


def _literal_scan(y: np.ndarray, offsets: np.ndarray, delta: int) -> np.ndarray:
    """The reference's sequential glass-blur scan, one pixel at a time."""
    y = y.copy()
    h, w = y.shape[:2]
    for a, row in enumerate(range(h - delta, delta, -1)):
        for b, col in enumerate(range(w - delta, delta, -1)):
            dx, dy = offsets[a, b]
            y[row, col] = y[row + dy, col + dx]
    return y


@pytest.mark.parametrize(("delta", "size"), [(1, 32), (2, 24), (4, 20)])
def test_glass_scan_equals_the_sequential_pixel_loop(delta: int, size: int) -> None:
    gen = np.random.default_rng(delta)
    images = gen.integers(0, 256, (4, size, size, 3)).astype(np.float64)
    offsets = gen.integers(-delta, delta, (4, size - 2 * delta, size - 2 * delta, 2))
    expected = np.stack([_literal_scan(images[i], offsets[i], delta) for i in range(4)])
    ours = scan_copy(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(offsets), delta)
    np.testing.assert_array_equal(ours.permute(0, 2, 3, 1).numpy(), expected)


def _imagemagick_motion(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage written per pixel from its documented algorithm."""
    width = 2 * int(np.ceil(radius)) + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma * sigma))
    k /= k.sum()
    px, py = width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle))
    hyp = np.hypot(px, py)
    h, w = img.shape[:2]
    out = np.zeros(img.shape, dtype=np.float64)
    for i in range(width):
        dx, dy = int(np.ceil(i * py / hyp - 0.5)), int(np.ceil(i * px / hyp - 0.5))
        rows = np.clip(np.arange(h) + dy, 0, h - 1)
        cols = np.clip(np.arange(w) + dx, 0, w - 1)
        out += k[i] * img[rows][:, cols]
    return np.floor(np.floor(out * 257 + 0.5) / 257)


def test_motion_blur_matches_imagemagick_algorithm() -> None:
    images = make_split("test", 4).images.astype(np.float64)
    angles = [-44.0, -10.5, 0.0, 37.0]
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    for radius, sigma in [(6, 1), (9, 2.5), (15, 8)]:
        ours = imagemagick_round(motion_blur(x, radius, sigma, torch.tensor(angles)))
        expected = np.stack([_imagemagick_motion(im, radius, sigma, a)
                             for im, a in zip(images, angles)])
        np.testing.assert_array_equal(ours.permute(0, 2, 3, 1).numpy(), expected)


def test_affine_warp_matches_opencv() -> None:
    gen = np.random.default_rng(0)
    images = make_split("test", 4).images.astype(np.float32) / 255
    src = np.float32([[21, 21], [21, 11], [11, 11]])
    for image in images:
        dst = (src + gen.uniform(-2.5, 2.5, src.shape)).astype(np.float32)
        expected = cv2.warpAffine(image, cv2.getAffineTransform(src, dst), (32, 32),
                                  borderMode=cv2.BORDER_REFLECT_101)
        m = affine_from_points(torch.from_numpy(src)[None], torch.from_numpy(dst)[None])
        ours = affine_warp(torch.from_numpy(image).permute(2, 0, 1)[None], m)[0].permute(1, 2, 0)
        # The warp keeps OpenCV 4's 1/32-pixel fixed-point coordinates (the reference's era);
        # OpenCV 5 interpolates at exact coordinates: they differ by at most 1/64 of a step edge.
        tolerance = 2e-6 if int(cv2.__version__.split(".")[0]) < 5 else 1 / 64
        np.testing.assert_allclose(ours.numpy(), expected, atol=tolerance)


def test_bilinear_sampling_matches_scipy_reflect() -> None:
    gen = np.random.default_rng(1)
    image = gen.random((32, 32)).astype(np.float32)
    rows = gen.uniform(-40, 70, (32, 32))
    cols = gen.uniform(-40, 70, (32, 32))
    expected = map_coordinates(image, [rows, cols], order=1, mode="reflect")
    ours = sample_bilinear(torch.from_numpy(image)[None, None], torch.from_numpy(rows)[None],
                           torch.from_numpy(cols)[None], "symmetric")
    np.testing.assert_allclose(ours[0, 0].numpy(), expected, atol=1e-5)


def test_gaussian_filter_matrix_is_scipys_filter() -> None:
    # elastic_transform's field blur: kernels wider than the image fold back several times
    field = np.random.default_rng(2).uniform(-1, 1, (2, 20, 20))
    for sigma, truncate in ((0.7, 4.0), (6.4, 3.0), (13.0, 3.0)):
        expected = scipy_gaussian(field, (0, sigma, sigma), mode="reflect", truncate=truncate)
        ours = gaussian_filter_matrix(torch.from_numpy(field), sigma, "symmetric", truncate)
        np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-14)


def test_jpeg_falls_back_to_pil_when_torchvision_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    from metabn_bench.corruptions import digital

    images = _synthetic(32)
    p = tables.params("cifar", "jpeg_compression", 3)
    expected = np.stack([ref.DETERMINISTIC["jpeg_compression"](im, p) for im in images])
    digital.jpeg_codec.cache_clear()
    monkeypatch.setattr(digital, "_torchvision_roundtrip", lambda im, q: im ^ 1)  # a wrong codec
    try:
        assert digital.jpeg_codec() == "pil"
        assert np.array_equal(corrupt_images(images, "jpeg_compression", 3, p, 0, CPU), expected)
    finally:
        digital.jpeg_codec.cache_clear()
