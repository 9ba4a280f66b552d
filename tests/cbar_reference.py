"""Straightforward per-image computations of the CIFAR-10-C-bar formulas (Mintun, Kirillov & Xie,
NeurIPS 2021), pixel by pixel in NumPy / SciPy, from the same random draws the engine made.

Each function takes one uint8 HWC image, the table's level and that image's draws (NumPy) and
returns the uint8 image the reference generator would make from them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.fftpack import ifft2


def _param(level: float, maxval: float) -> float:
    return float(level) * maxval / 10.0


def _noise_map(phases: np.ndarray, power_of_distance) -> np.ndarray:
    size = phases.shape[0]
    c = size / 2
    power = np.array([[power_of_distance(np.linalg.norm(np.array([x, y]) - c))
                       for x in range(size)] for y in range(size)])
    spectrum = power * (np.cos(phases) + np.sin(phases) * 1j)
    spectrum = np.roll(np.roll(spectrum, size // 2, axis=0), size // 2, axis=1)
    noise = np.real(ifft2(spectrum))
    return noise / np.std(noise)


def blue_noise_sample(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    mask = _noise_map(d["phases"], lambda r: r) > _param(level, 3.0) - 2.5
    return np.clip(img * mask[:, :, None], 0, 255).astype(np.uint8)


def brownish_noise(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    noise = np.stack([_noise_map(p, lambda r: 1 / (r ** 2 + 1)) for p in d["phases"]], axis=2)
    return np.clip(img + _param(level, 64) * noise, 0, 255).astype(np.uint8)


def checkerboard_cutout(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    angle, side = float(d["angle"]), float(d["side"])
    cells = int(4 * size // side)
    grid = d["grid"][:cells, :cells] < _param(level, 1.0)
    out = img.copy()
    for y in range(size):
        for x in range(size):
            nx = (np.cos(angle) * y + np.sin(angle) * x) / side
            ny = (-np.sin(angle) * y + np.cos(angle) * x) / side
            if not (int(nx % 2) != int(ny % 2) or not grid[int(nx), int(ny)]):
                out[y, x] = 128
    return out


def lines(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    from skimage.draw import line_aa

    size = img.shape[0]
    out = img.copy()
    for u in d["lines"]:
        x, y = size * u[0], size * u[1]
        a = float(d["angle"]) + 2 * np.pi * float(d["spread"]) * (u[2] - 0.5)
        s, c = np.sin(a) * size, np.cos(a) * size
        rr, cc, val = line_aa(int(x - c), int(y - s), int(x + c), int(y + s))
        keep = [(r, q, v) for r, q, v in zip(rr, cc, val) if 0 <= r < size and 0 <= q < size]
        rr = np.array([k[0] for k in keep], dtype=int)
        cc = np.array([k[1] for k in keep], dtype=int)
        val = np.array([k[2] for k in keep]).reshape(-1, 1)
        out[rr, cc, :] = (1.0 - val) * out[rr, cc, :].astype(np.float32) + val * 128
    return out


def _star(point, centre, lengths, exponent):
    """The weight f of one star at one pixel."""
    rays = len(lengths)
    dp = point - centre
    dist = np.linalg.norm(dp)
    angle = np.arctan2(dp[1], dp[0])
    d = (angle + np.pi) / (2 * np.pi) * rays
    i = int(d)
    f = d - i
    length = lengths[i % rays] + f * (lengths[(i + 1) % rays] - lengths[i % rays])
    g = (length ** 2 / (dist ** 2 + 1e-4)) ** exponent
    return np.clip((1 - (f - 0.5) ** 2) * g, 0, 1)


def sparkles(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    image = img
    for k in range(5):
        lengths = d["lengths"][k][:int(d["rays"][k])]
        new = np.empty((size, size, 3))
        for y in range(size):
            for x in range(size):
                value = image[y, x, :].astype(np.float32)
                f = _star(np.array([y, x]), d["centres"][k], lengths, 1.0)
                new[y, x] = value + f * (np.array([255, 255, 255]) - value)
        image = new
    return np.clip(image, 0, 255).astype(np.uint8)


def inverse_sparkles(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    lengths = d["lengths"][:int(d["rays"])]
    exponent = (100 - (100 - _param(level, 65))) / 50.0
    out = np.empty((size, size, 3))
    for y in range(size):
        for x in range(size):
            value = img[y, x, :].astype(np.float32)
            f = _star(np.array([y, x]), d["centre"], lengths, exponent)
            out[y, x] = np.array([255, 255, 255]) + f * (value - np.array([255, 255, 255]))
    return np.clip(out, 0, 255).astype(np.uint8)


def _bilinear(image: np.ndarray, point) -> np.ndarray:
    def at(r, q):
        inside = 0 <= r < image.shape[0] and 0 <= q < image.shape[1]
        return image[r, q, :] if inside else np.array([0, 0, 0])
    top, left = int(np.floor(point[0])), int(np.floor(point[1]))
    w_left, w_right = 1.0 - point[1] + left, 1.0 - (left + 1) + point[1]
    upper = at(top, left) * w_left + at(top, left + 1) * w_right
    lower = at(top + 1, left) * w_left + at(top + 1, left + 1) * w_right
    return upper * (1.0 - point[0] + top) + lower * (1.0 - (top + 1) + point[0])


def _twirl(p: np.ndarray, centre: np.ndarray, radius: float, amount: float,
           angle: float) -> np.ndarray:
    dist = np.linalg.norm(p - centre)
    if dist > radius or np.round(dist, 3) == 0.0:
        return p
    dd = dist / radius
    t = np.sin(np.pi * 0.5 * dd) ** (-amount)
    dy, dx = (p[0] - centre[0]) * t, (p[1] - centre[1]) * t
    a = angle * ((1 - dd) ** 2)
    return centre + np.array([dy * np.cos(a) - dx * np.sin(a), dy * np.sin(a) + dx * np.cos(a)])


def pinch_and_twirl(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    n = 5 if size == 224 else 3
    amount = _param(level, 0.4) + 0.1
    out = img.copy().astype(np.float32)
    grid = size // n
    radius = grid / 2
    for i in range(n):
        for j in range(n):
            angle = float(d["signs"][i, j]) * _param(level, np.pi / 2)
            centre = np.array([j * grid + radius, i * grid + radius])
            out[j * grid:(j + 1) * grid, i * grid:(i + 1) * grid, :] = np.array([
                [_bilinear(out, _twirl(np.array([y, x]), centre, radius, amount, angle))
                 for x in range(i * grid, (i + 1) * grid)]
                for y in range(j * grid, (j + 1) * grid)])
    return np.clip(out, 0, 255).astype(np.uint8)


def ripple(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    amp = _param(level, 0.025) * size
    wl, ph = d["wavelengths"], d["phases"]
    out = np.array([[_bilinear(img, np.array([y, x]) + amp * np.sin(2 * np.pi * np.array([y, x]) / wl + ph))
                     for x in range(size)] for y in range(size)])
    return np.clip(out, 0, 255).astype(np.uint8)


def circular_motion_blur(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    image = img.astype(np.float32) / 255
    out = np.zeros_like(image)
    factors = []
    for i in range(21):
        t = 2 * i / 20 - 1
        factors.append(np.exp(-2 * t ** 2))
        out += np.float32(factors[-1]) * ndimage.rotate(image, t * _param(level, 15), reshape=False)
    out /= np.float32(sum(factors))
    return np.clip(out * 255, 0, 255).astype(np.uint8)


def transverse_chromatic_abberation(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    s = _param(level, 0.5)
    scales = np.array([1.0, 1.0 + s / 2, 1.0 + s])[d["order"]]
    out = img.copy()
    for c in range(3):
        zoomed = ndimage.zoom(img[:, :, c], scales[c], prefilter=False)
        edge = (zoomed.shape[0] - size) // 2
        out[:, :, c] = zoomed[edge:edge + size, edge:edge + size]
    return out


REFERENCE = {f.__name__: f for f in (
    blue_noise_sample, brownish_noise, checkerboard_cutout, lines, sparkles, inverse_sparkles,
    pinch_and_twirl, ripple, circular_motion_blur, transverse_chromatic_abberation)}
