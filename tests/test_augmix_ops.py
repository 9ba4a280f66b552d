"""Batched AugMix: each op against PIL (the reference's backend), the mixture, the randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from metabn_bench.data import augmix as am
from metabn_bench.data.augmix import (
    AFFINE_OPS,
    ALL_OPS,
    AUGMIX_OPS,
    AugMixPlan,
    affine_matrices,
    apply_op,
    apply_plan,
    augmix,
    sample_plan,
)
from metabn_bench.data.synthetic import make_split

OVERLAPPING = ("color", "contrast", "brightness", "sharpness")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_split("test", 6).images  # uint8 NHWC, 32x32


def _as_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def _pil_op(name: str, img: np.ndarray, level: float, sign: int) -> np.ndarray:
    """The reference's op on one PIL image (magnitudes written out from the paper's code)."""
    p = Image.fromarray(img)
    side = img.shape[0]
    affine = {"shear_x": (1, sign * level * 0.3 / 10, 0, 0, 1, 0),
              "shear_y": (1, 0, 0, sign * level * 0.3 / 10, 1, 0),
              "translate_x": (1, 0, sign * int(level * side / 3 / 10), 0, 1, 0),
              "translate_y": (1, 0, 0, 0, 1, sign * int(level * side / 3 / 10))}
    factor = level * 1.8 / 10 + 0.1
    if name in affine:
        out = p.transform(p.size, Image.AFFINE, affine[name], resample=Image.BILINEAR)
    elif name == "rotate":
        out = p.rotate(sign * int(level * 30 / 10), resample=Image.BILINEAR)
    elif name == "autocontrast":
        out = ImageOps.autocontrast(p)
    elif name == "equalize":
        out = ImageOps.equalize(p)
    elif name == "posterize":
        out = ImageOps.posterize(p, 4 - int(level * 4 / 10))
    elif name == "solarize":
        out = ImageOps.solarize(p, 256 - int(level * 256 / 10))
    else:
        enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                    "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}
        out = enhancer[name](p).enhance(factor)
    return np.asarray(out).astype(np.float64)


def _valid_region(name: str, level: float, sign: int, side: int) -> np.ndarray:
    """Output pixels whose sample point lies at least a pixel inside the input image."""
    if name not in AFFINE_OPS:
        return np.ones((side, side), dtype=bool)
    m = affine_matrices(torch.tensor([AFFINE_OPS.index(name)]), torch.tensor([level]),
                        torch.tensor([float(sign)]), side, side)[0].double()
    ys, xs = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    pts = m @ torch.stack([xs.flatten(), ys.flatten(), torch.ones(side * side)]).double()
    inside = (pts[0] > 1) & (pts[0] < side - 1) & (pts[1] > 1) & (pts[1] < side - 1)
    return inside.view(side, side).numpy()


def test_op_lists_exclude_the_ops_that_overlap_the_corruptions() -> None:
    assert set(AUGMIX_OPS) == {"autocontrast", "equalize", "posterize", "rotate", "solarize",
                               "shear_x", "shear_y", "translate_x", "translate_y"}
    assert not set(OVERLAPPING) & set(AUGMIX_OPS)
    assert (*AUGMIX_OPS, *OVERLAPPING) == ALL_OPS


@pytest.mark.parametrize("name", ALL_OPS)
def test_each_op_matches_pil_within_one_grey_level(images: np.ndarray, name: str) -> None:
    x = _as_batch(images)
    for level, sign in ((2.9, 1), (2.9, -1), (9.5, -1)):
        ours = apply_op(x, name, torch.full((len(x),), level), torch.full((len(x),), float(sign)))
        ours_255 = (ours * 255).permute(0, 2, 3, 1).double().numpy()
        ref = np.stack([_pil_op(name, img, level, sign) for img in images])
        region = _valid_region(name, level, sign, x.shape[-1])
        assert region.mean() > 0.6
        diff = np.abs(ours_255 - ref)[:, region]
        # PIL rounds every result to uint8; the batched ops stay float.
        assert diff.max() <= 1.5, (name, level, sign, diff.max())
        assert diff.mean() <= 0.6, (name, level, sign, diff.mean())


def test_augmix_keeps_shape_dtype_layout_and_range_and_follows_the_generator() -> None:
    x = torch.rand(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    a = augmix(x, torch.Generator().manual_seed(1))
    b = augmix(x, torch.Generator().manual_seed(1))
    c = augmix(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = augmix(x)
    torch.manual_seed(3)
    assert torch.equal(d, augmix(x))  # no generator: torch's global RNG
    assert augmix(x.to(torch.bfloat16), torch.Generator().manual_seed(1)).dtype == torch.bfloat16


def test_every_image_draws_its_own_chains() -> None:
    x = torch.rand(1, 3, 32, 32).expand(16, 3, 32, 32).contiguous()
    out = augmix(x, torch.Generator().manual_seed(0))
    distinct = {tuple(img.flatten()[:64].tolist()) for img in out}
    assert len(distinct) == 16


def test_plan_distributions() -> None:
    plan = sample_plan(4000, torch.Generator().manual_seed(0), severity=3, width=3)
    assert plan.op_names == AUGMIX_OPS
    assert plan.ops.shape == plan.levels.shape == plan.signs.shape == (3, 12000)
    assert set(plan.ops.unique().tolist()) == set(range(len(AUGMIX_OPS)))
    assert set(plan.depth.unique().tolist()) == {1, 2, 3}
    assert float(plan.levels.min()) >= 0.1 and float(plan.levels.max()) < 3
    assert set(plan.signs.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(plan.weights.sum(1), torch.ones(4000))
    assert float(plan.weights.mean()) == pytest.approx(1 / 3, abs=0.01)  # Dirichlet(1, 1, 1)
    assert float(plan.mix.mean()) == pytest.approx(0.5, abs=0.02)  # Beta(1, 1)
    assert float(plan.mix.var()) == pytest.approx(1 / 12, abs=0.01)
    fixed = sample_plan(10, torch.Generator().manual_seed(0), depth=2, all_ops=True)
    assert set(fixed.depth.tolist()) == {2} and fixed.op_names == ALL_OPS
    with pytest.raises(ValueError, match="invalid AugMix setting"):
        sample_plan(2, depth=4)


def _plan(ops: list[str], weights: list[float], mix: float, depth: int = 1) -> AugMixPlan:
    """A one-image plan with one op per chain at level 5, sign +1."""
    width = len(ops)
    codes = torch.tensor([[AUGMIX_OPS.index(o) for o in ops]] * 3)
    return AugMixPlan(AUGMIX_OPS, codes, torch.full((3, width), 5.0), torch.ones(3, width),
                      torch.full((width,), depth), torch.tensor([weights]), torch.tensor([mix]))


def test_mixture_is_the_reference_formula() -> None:
    x = torch.rand(1, 3, 32, 32)
    level = torch.tensor([5.0])
    assert torch.equal(apply_plan(x, _plan(["solarize", "rotate"], [0.5, 0.5], 0.0)), x)
    solarized = apply_op(x, "solarize", level)
    torch.testing.assert_close(apply_plan(x, _plan(["solarize", "rotate"], [1.0, 0.0], 1.0)),
                               solarized)
    rotated = apply_op(x, "rotate", level)
    expected = 0.7 * x + 0.3 * (0.25 * solarized + 0.75 * rotated)
    torch.testing.assert_close(apply_plan(x, _plan(["solarize", "rotate"], [0.25, 0.75], 0.3)),
                               expected)
    twice = apply_op(solarized, "solarize", level)  # depth 2 applies the chain's ops in order
    torch.testing.assert_close(apply_plan(x, _plan(["solarize"], [1.0], 1.0, depth=2)), twice)


def test_excluded_ops_are_used_only_with_all_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    called: set[str] = set()
    for name, op in list(am.POINT_OPS.items()):
        def recording(x, level, _name=name, _op=op):
            called.add(_name)
            return _op(x, level)
        monkeypatch.setitem(am.POINT_OPS, name, recording)
    x = torch.rand(32, 3, 16, 16)
    for seed in range(3):
        augmix(x, torch.Generator().manual_seed(seed))
    assert called == {"autocontrast", "equalize", "posterize", "solarize"}
    augmix(x, torch.Generator().manual_seed(0), all_ops=True)
    assert set(OVERLAPPING) <= called
