"""AugMix chains as batched tensor operations (Hendrycks et al., ICLR 2020, "AugMix").

`augmix(x)` returns, for every image of a float (B, 3, H, W) batch in [0, 1], the mixture
(1 - m) * x + m * sum_i w_i * chain_i(x) with `width` chains of `depth` ops each (depth
uniform in {1, 2, 3} by default), w ~ Dirichlet(alpha), m ~ Beta(alpha, alpha). Every image
draws its own chain lengths, ops, levels and signs; all of it comes from one torch.Generator
(or torch's global RNG), so a batch's augmentation is a function of the generator's state.

The ops and magnitudes are the reference's (level ~ U(0.1, severity), then
posterize bits = 4 - int(level * 4 / 10), rotate int(level * 30 / 10) degrees,
solarize threshold 256 - int(level * 256 / 10), shear level * 0.3 / 10,
translate int(level * side / 3 / 10) pixels, each with a random sign where the op has one;
color / contrast / brightness / sharpness factor level * 1.8 / 10 + 0.1).
`AUGMIX_OPS` is the default list, without the ops that overlap the test corruptions;
`ALL_OPS` adds color, contrast, brightness and sharpness (opt in with all_ops=True).

Where this departs from the reference (which applies PIL ops to one uint8 image at a time):
- Images stay float between ops; only posterize and equalize quantise their input to 8 bits
  (as the reference's uint8 images are at every step), so values differ by rounding.
- Rotate, shear and translate use bilinear `grid_sample` with zero fill and PIL's geometry
  (pixel-centre sampling, shear about the top-left corner, rotation about the centre). Where
  a sample point lies within a pixel of the image border, PIL clamps to the edge pixel and
  `grid_sample` blends with the zero fill, so pixels along the boundary of the valid region
  differ; elsewhere the two agree to within one grey level.
- Autocontrast and equalize are torchvision's batched versions of PIL's algorithms
  (torchvision.transforms.v2.functional); autocontrast does not round to 8 bits.
- The translate magnitude uses the batch's own side (the reference hard-codes 32 for CIFAR).
torchvision.transforms.AugMix is not used: it includes the overlapping ops by default, uses
discrete magnitudes and mixes in uint8.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

AFFINE_OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
AUGMIX_OPS: tuple[str, ...] = ("autocontrast", "equalize", "posterize", "rotate", "solarize",
                               "shear_x", "shear_y", "translate_x", "translate_y")
ALL_OPS: tuple[str, ...] = (*AUGMIX_OPS, "color", "contrast", "brightness", "sharpness")
MAX_DEPTH = 3  # depth=-1 draws each chain's length uniformly from {1, ..., MAX_DEPTH}


def _int_parameter(level: Tensor, maxval: float) -> Tensor:
    """The reference's int(level * maxval / 10) (levels are positive, so floor == int)."""
    return torch.floor(level * maxval / 10)


def _float_parameter(level: Tensor, maxval: float) -> Tensor:
    return level * maxval / 10


def _per_image(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


# -- colour and histogram ops: (n, 3, H, W) float in [0, 1], per-image level (n,) ---------------

def _autocontrast(x: Tensor, level: Tensor) -> Tensor:
    return TF.autocontrast(x)


def _equalize(x: Tensor, level: Tensor) -> Tensor:
    return TF.equalize(x.clamp(0, 1))


def _posterize(x: Tensor, level: Tensor) -> Tensor:
    bits = 4 - _int_parameter(level, 4)  # bits kept, as PIL's ImageOps.posterize(img, bits)
    step = _per_image(torch.pow(2.0, 8 - bits))
    q = torch.round(x * 255)
    return torch.floor(q / step) * step / 255


def _solarize(x: Tensor, level: Tensor) -> Tensor:
    threshold = _per_image(256 - _int_parameter(level, 256))  # PIL inverts values >= threshold
    return torch.where(x * 255 < threshold, x, 1 - x)


def _grey(x: Tensor) -> Tensor:
    """PIL's RGB -> L conversion (ITU-R 601-2 luma)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate), clipped."""
    return (degenerate + _per_image(factor) * (x - degenerate)).clamp(0, 1)


def _enhance_factor(level: Tensor) -> Tensor:
    return _float_parameter(level, 1.8) + 0.1


def _color(x: Tensor, level: Tensor) -> Tensor:
    return _blend(_grey(x).expand_as(x), x, _enhance_factor(level))


def _contrast(x: Tensor, level: Tensor) -> Tensor:
    mean = torch.round(_grey(x).mean(dim=(1, 2, 3), keepdim=True) * 255) / 255
    return _blend(mean.expand_as(x), x, _enhance_factor(level))


def _brightness(x: Tensor, level: Tensor) -> Tensor:
    return _blend(torch.zeros_like(x), x, _enhance_factor(level))


def _sharpness(x: Tensor, level: Tensor) -> Tensor:
    # PIL's SMOOTH filter (centre 5, neighbours 1, over 13); the one-pixel border stays unchanged.
    kernel = torch.ones(3, 1, 3, 3, dtype=x.dtype, device=x.device)
    kernel[:, :, 1, 1] = 5.0
    smooth = F.conv2d(x, kernel / 13, groups=3)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, _enhance_factor(level))


PointOp = Callable[[Tensor, Tensor], Tensor]
POINT_OPS: dict[str, PointOp] = {
    "autocontrast": _autocontrast, "equalize": _equalize, "posterize": _posterize,
    "solarize": _solarize, "color": _color, "contrast": _contrast, "brightness": _brightness,
    "sharpness": _sharpness,
}


# -- geometric ops: one grid_sample for every image that draws any of them ----------------------

def affine_matrices(kind: Tensor, level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    """Per-image (n, 3, 3) maps from output to input pixel coordinates, as PIL's transforms.

    `kind` indexes AFFINE_OPS. Coordinates are continuous with pixel (i, j) covering
    [j, j + 1) x [i, i + 1); PIL samples at pixel centres, as grid_sample(align_corners=False).
    """
    n = kind.shape[0]
    m = torch.eye(3, dtype=torch.float32, device=kind.device).repeat(n, 1, 1)
    rotate, shear_x, shear_y, tx, ty = (kind == k for k in range(len(AFFINE_OPS)))
    # Rotate counter-clockwise by `degrees` about the image centre (PIL's Image.rotate).
    degrees = _int_parameter(level, 30) * sign
    a = -degrees * math.pi / 180
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = width / 2, height / 2
    rot = torch.stack([torch.stack([cos, sin, cx - cos * cx - sin * cy], 1),
                       torch.stack([-sin, cos, cy + sin * cx - cos * cy], 1)], 1)
    m[:, :2] = torch.where(rotate.view(-1, 1, 1), rot, m[:, :2])
    shear = _float_parameter(level, 0.3) * sign
    m[:, 0, 1] = torch.where(shear_x, shear, m[:, 0, 1])  # x_in = x + s * y
    m[:, 1, 0] = torch.where(shear_y, shear, m[:, 1, 0])  # y_in = s * x + y
    m[:, 0, 2] = torch.where(tx, _int_parameter(level, width / 3) * sign, m[:, 0, 2])
    m[:, 1, 2] = torch.where(ty, _int_parameter(level, height / 3) * sign, m[:, 1, 2])
    return m


def _warp(x: Tensor, pixel_maps: Tensor) -> Tensor:
    """Resample x through per-image pixel maps (bilinear, zero fill)."""
    n, _, h, w = x.shape
    to_pixels = torch.tensor([[w / 2, 0, w / 2], [0, h / 2, h / 2], [0, 0, 1]],
                             dtype=torch.float32, device=x.device)
    theta = torch.linalg.solve(to_pixels, pixel_maps @ to_pixels)  # normalised -> normalised
    grid = F.affine_grid(theta[:, :2], [n, 3, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_op(x: Tensor, name: str, level: Tensor, sign: Tensor | None = None) -> Tensor:
    """One named op on every image of x with per-image `level` (n,) and `sign` (n,) of +-1."""
    level = level.to(device=x.device, dtype=torch.float32)
    if name in POINT_OPS:
        return POINT_OPS[name](x, level)
    if name not in AFFINE_OPS:
        raise ValueError(f"unknown AugMix op '{name}'; valid: {', '.join(ALL_OPS)}")
    sign = torch.ones_like(level) if sign is None else sign.to(level)
    kind = torch.full_like(level, AFFINE_OPS.index(name), dtype=torch.long)
    return _warp(x, affine_matrices(kind, level, sign, x.shape[2], x.shape[3]))


# -- sampling and mixing ------------------------------------------------------------------------

@dataclass
class AugMixPlan:
    """Everything random about one AugMix batch (B images, `width` chains, MAX_DEPTH steps).

    ops / levels / signs: (MAX_DEPTH, B * width), chain-major within a step (chain c of image b
    is column c * B + b); depth: (B * width,) ops applied per chain; weights: (B, width);
    mix: (B,) the weight m of the chains' mixture.
    """

    op_names: tuple[str, ...]
    ops: Tensor
    levels: Tensor
    signs: Tensor
    depth: Tensor
    weights: Tensor
    mix: Tensor


def _gamma(alpha: float, shape: tuple[int, ...], gen: torch.Generator | None,
           device: torch.device) -> Tensor:
    return torch._standard_gamma(torch.full(shape, float(alpha), device=device), generator=gen)


def sample_plan(batch: int, generator: torch.Generator | None = None, severity: int = 3,
                width: int = 3, depth: int = -1, alpha: float = 1.0, all_ops: bool = False,
                device: torch.device | str = "cpu",
                ops: tuple[str, ...] | None = None) -> AugMixPlan:
    """Draw a batch's chains, levels ~ U(0.1, severity), weights ~ Dirichlet, m ~ Beta.

    `ops` restricts the chains to a subset of ALL_OPS (a family of ops, as BN Embeddings'
    pseudo-domains use); None: AUGMIX_OPS, or ALL_OPS with all_ops.
    """
    if width < 1 or depth == 0 or depth > MAX_DEPTH or depth < -1 or severity <= 0 or alpha <= 0:
        raise ValueError(f"invalid AugMix setting: width={width} (>= 1), depth={depth} (-1 or "
                         f"1..{MAX_DEPTH}), severity={severity} (> 0), alpha={alpha} (> 0)")
    if ops is not None and (not ops or not set(ops) <= set(ALL_OPS)):
        raise ValueError(f"ops must be a non-empty subset of {', '.join(ALL_OPS)}; got {ops}")
    dev = generator.device if generator is not None else torch.device(device)
    names = ops if ops is not None else (ALL_OPS if all_ops else AUGMIX_OPS)
    n = batch * width
    g = _gamma(alpha, (batch, width), generator, dev)
    weights = g / g.sum(dim=1, keepdim=True)
    a, b = _gamma(alpha, (batch,), generator, dev), _gamma(alpha, (batch,), generator, dev)
    mix = a / (a + b)
    if depth == -1:
        chain_depth = torch.randint(1, MAX_DEPTH + 1, (n,), generator=generator, device=dev)
    else:
        chain_depth = torch.full((n,), depth, dtype=torch.long, device=dev)
    ops = torch.randint(0, len(names), (MAX_DEPTH, n), generator=generator, device=dev)
    levels = 0.1 + (severity - 0.1) * torch.rand(MAX_DEPTH, n, generator=generator, device=dev)
    signs = torch.where(torch.rand(MAX_DEPTH, n, generator=generator, device=dev) < 0.5, -1.0, 1.0)
    target = torch.device(device)
    return AugMixPlan(names, ops.to(target), levels.to(target), signs.to(target),
                      chain_depth.to(target), weights.to(target), mix.to(target))


def _apply_step(chains: Tensor, names: tuple[str, ...], op: Tensor, level: Tensor,
                sign: Tensor, active: Tensor) -> Tensor:
    """One step of every chain: each active image gets its own op (grouped by op type)."""
    out = chains.clone()
    affine_kind = torch.full_like(op, -1)
    for k, name in enumerate(names):
        chosen = active & (op == k)
        if name in AFFINE_OPS:
            affine_kind[chosen] = AFFINE_OPS.index(name)
            continue
        idx = chosen.nonzero().squeeze(1)
        if idx.numel():
            out[idx] = POINT_OPS[name](chains[idx], level[idx])
    idx = (affine_kind >= 0).nonzero().squeeze(1)
    if idx.numel():
        maps = affine_matrices(affine_kind[idx], level[idx], sign[idx], chains.shape[2],
                               chains.shape[3])
        out[idx] = _warp(chains[idx], maps)
    return out


def apply_plan(x: Tensor, plan: AugMixPlan) -> Tensor:
    """The AugMix mixture of x under a sampled plan (same shape, dtype, device, layout)."""
    b = x.shape[0]
    width = plan.weights.shape[1]
    src = x.float().contiguous()
    chains = src.repeat(width, 1, 1, 1)  # chain c of image b at row c * b + b
    for step in range(plan.ops.shape[0]):
        active = plan.depth > step
        if bool(active.any()):
            chains = _apply_step(chains, plan.op_names, plan.ops[step], plan.levels[step],
                                 plan.signs[step], active)
    chains = chains.view(width, b, *x.shape[1:])
    mixed = torch.einsum("bc,cbkhw->bkhw", plan.weights.to(src), chains)
    m = _per_image(plan.mix.to(src))
    out = (1 - m) * src + m * mixed
    layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return out.to(x.dtype).contiguous(memory_format=layout)


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def augmix(x: Tensor, generator: torch.Generator | None = None, severity: int = 3,
           width: int = 3, depth: int = -1, alpha: float = 1.0,
           all_ops: bool = False, ops: tuple[str, ...] | None = None) -> Tensor:
    """x: float (B,3,H,W) in [0,1] on any device -> an AugMix mixture of the same shape/device.

    Per image: `width` chains of depth U{1,2,3} (depth=-1) of ops drawn from the reference
    list (autocontrast, equalize, posterize, rotate, solarize, shear_x/y, translate_x/y;
    with all_ops=True also color, contrast, brightness, sharpness; `ops`: a subset of them),
    levels ~ U(0.1, severity),
    chain weights ~ Dirichlet(alpha), m ~ Beta(alpha, alpha),
    output = (1-m)*x + m*sum_i w_i*chain_i(x). Randomness comes from `generator` (any device)
    or, when None, from torch's global RNG of x's device. See the module docstring for where
    this departs from the reference's per-image PIL implementation.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"augmix expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
    plan = sample_plan(x.shape[0], generator, severity, width, depth, alpha, all_ops, x.device, ops)
    return apply_plan(x, plan)
