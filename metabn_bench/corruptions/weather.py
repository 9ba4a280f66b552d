"""Weather corruptions (Hendrycks & Dietterich 2019), batched: snow, frost, fog, brightness."""

from __future__ import annotations

import torch
from torch import Tensor

from metabn_bench.corruptions.blur import imagemagick_round
from metabn_bench.corruptions.color import hsv_to_rgb, rgb_to_gray, rgb_to_hsv
from metabn_bench.corruptions.filters import next_power_of_two
from metabn_bench.corruptions.geometry import clipped_zoom, motion_blur
from metabn_bench.corruptions.registry import clip255, corruption
from metabn_bench.corruptions.rng import ImageRandom
from metabn_bench.corruptions.textures import frost_bank


@corruption("brightness", random=False)
def brightness(x: Tensor, c: float, rng: ImageRandom) -> Tensor:
    """HSV value + c (clipped to [0, 1]), back to RGB, clipped."""
    h, s, v = rgb_to_hsv(x)
    return clip255(hsv_to_rgb(h, s, (v + c).clamp(0, 1)))


def plasma_draws(mapsize: int) -> int:
    """How many uniform draws one diamond-square map of side `mapsize` takes."""
    total, step = 0, mapsize
    while step >= 2:
        total += 3 * (mapsize // step) ** 2
        step //= 2
    return total


def plasma_fractal(uniforms: Tensor, mapsize: int, decay: float) -> Tensor:
    """Diamond-square height maps (B, M, M) in [0, 1], one per row of `uniforms` (B, draws).

    The reference's algorithm: start amplitude 100, each new point the mean of its four
    neighbours (wrapping around) plus amplitude * U(-amplitude, amplitude), amplitude divided by
    `decay` at each halving of the step; finally shifted and scaled to [0, 1] per map.
    """
    b = uniforms.shape[0]
    m = torch.zeros(b, mapsize, mapsize, dtype=torch.float64, device=uniforms.device)
    u = uniforms.to(torch.float64)
    step, wibble, used = mapsize, 100.0, 0

    def wibbled_mean(total: Tensor) -> Tensor:
        nonlocal used
        n = total.shape[1] * total.shape[2]
        noise = (u[:, used:used + n].view_as(total) * 2 - 1) * wibble
        used += n
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        m[:, half::step, half::step] = wibbled_mean(squares)
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled_mean(centres + centres.roll(1, 1)
                                                 + corners + corners.roll(-1, 2))
        m[:, half::step, 0::step] = wibbled_mean(centres + centres.roll(1, 2)
                                                 + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


@corruption("fog", random=True)
def fog(x: Tensor, params: tuple[float, float, int], rng: ImageRandom) -> Tensor:
    """x + a * plasma, then scaled by max / (max + a) (max of the clean image), clipped.

    params: (amplitude a, decay, map side; 0 = the next power of two of the image side). A map
    smaller than the image is enlarged to the next power of two that covers it.
    """
    amplitude, decay, map_side = float(params[0]), float(params[1]), int(params[2])
    h, w = x.shape[-2:]
    side = max(map_side, next_power_of_two(max(h, w)))
    plasma = plasma_fractal(rng.uniform(plasma_draws(side), dtype=torch.float64), side, decay)
    peak = x.amax((1, 2, 3), keepdim=True)
    y = x + amplitude * plasma[:, :h, :w].unsqueeze(1).to(x.dtype)
    return clip255(y * peak / (peak + amplitude))


@corruption("frost", random=True)
def frost(x: Tensor, params: tuple[float, float, float], rng: ImageRandom) -> Tensor:
    """clip(a * x + b * frost) in 0..255 with frost a random crop of one of the reference's
    first five textures, resized by the preset's scale. params: (a, b, texture scale)."""
    a, b, scale = (float(p) for p in params)
    n, _, h, w = x.shape
    bank, sizes = frost_bank(scale, h, w, x.device)
    draws = rng.uniform(3, dtype=torch.float64)
    which = (draws[:, 0] * len(sizes)).long().clamp_(max=len(sizes) - 1)
    room = sizes[which] - torch.tensor([h, w], device=x.device)
    top = (draws[:, 1] * room[:, 0]).long()
    left = (draws[:, 2] * room[:, 1]).long()
    hm, wm = bank.shape[-2:]
    rows = top.view(n, 1, 1, 1) + torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = left.view(n, 1, 1, 1) + torch.arange(w, device=x.device).view(1, 1, 1, w)
    chan = torch.arange(3, device=x.device).view(1, 3, 1, 1)
    index = ((which.view(n, 1, 1, 1) * 3 + chan) * hm + rows) * wm + cols
    crops = bank.reshape(-1).take(index).to(x.dtype)
    return (a * torch.round(x * 255) + b * crops).clamp(0, 255)


@corruption("snow", random=True)
def snow(x: Tensor, params: tuple[float, ...], rng: ImageRandom) -> Tensor:
    """Snow flakes over a brightened image.

    params: (mean, std, zoom, threshold, blur radius, blur sigma, blend). The flake layer is
    N(mean, std) per pixel, centre-zoomed, zeroed below the threshold, truncated to 8 bits,
    motion-blurred (ImageMagick) at an angle uniform in [-135, -45] degrees and read back as
    8 bits. The image is first blended: blend * x + (1 - blend) * max(x, 1.5 * grey(x) + 0.5);
    the result is x + flakes + flakes rotated by 180 degrees, clipped.
    """
    mean, std, zoom, threshold, radius, sigma, blend = (float(p) for p in params)
    h, w = x.shape[-2:]
    layer = rng.normal(1, h, w, dtype=torch.float64) * std + mean
    if zoom != 1:  # a zoom by 1 is the identity map
        layer = clipped_zoom(layer, [zoom])[:, 0]
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255)
    angles = rng.uniform(1).view(-1) * 90 - 135
    flakes = imagemagick_round(motion_blur(layer, radius, sigma, angles)) / 255
    x32 = x.to(torch.float32)  # the reference blends in float32, then adds float64 flakes
    lifted = torch.maximum(x32, rgb_to_gray(x32) * 1.5 + 0.5)
    y = (blend * x32 + (1 - blend) * lifted).to(torch.float64)
    return clip255(y + flakes + flakes.flip(-1, -2))
