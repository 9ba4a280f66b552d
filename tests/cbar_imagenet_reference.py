"""Straightforward per-image computations of ImageNet-C-bar's five own formulas (Mintun, Kirillov &
Xie, NeurIPS 2021), pixel by pixel in NumPy / SciPy, from the same random draws the engine made.

Each function takes one uint8 HWC image, the table's level and that image's draws (NumPy) and
returns the uint8 image the reference generator would make from them (its im_size is the image
side here).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from tests.cbar_reference import _bilinear, _param


def single_frequency_greyscale(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    freq, phase = d["freq"], float(d["phase"])
    noise = np.array([[np.sin(x * freq[0] + y * freq[1] + phase) for x in range(size)]
                      for y in range(size)])
    noise = np.stack((noise, noise, noise), axis=2)
    return np.clip(img + _param(level, 196) * noise, 0, 255).astype(np.uint8)


def cocentric_sine_waves(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    x0, y0 = d["offset"]
    freq, amplitude, width = float(d["freq"]), float(d["amplitude"]), float(d["ring_width"])

    def ring(x: int, y: int) -> float:
        angle = np.arctan2(x - x0, y - y0) * freq
        dist = ((np.sqrt((x - x0) ** 2 + (y - y0) ** 2) + np.sin(angle) * amplitude) % width)
        return dist / width - 1 / 2

    noise = np.array([[ring(x, y) for x in range(size)] for y in range(size)])
    intensity = _param(level, 128)
    noise = np.stack((intensity * noise, intensity * noise, intensity * noise), axis=2)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def plasma_noise(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    rand, iters = float(d["time"]), int(d["iterations"])
    sharp, scale = float(d["sharpness"]), float(d["scale"])

    def kernel(x: float, y: float) -> list[float]:
        x /= scale
        y /= scale
        i = np.array([1.0, 1.0, 1.0, 0.0])
        for _ in range(iters):
            r = np.array([np.cos(y * i[0] - i[3] + rand / i[1]),
                          np.sin(x * i[0] - i[3] + rand / i[1])]) / i[2]
            r += np.array([-r[1], r[0]]) * 0.3
            x += r[0]
            y += r[1]
            i *= np.array([1.93, 1.15, (2.25 - sharp), rand * i[1]])
        return [np.sin(x - rand), np.sin((x + y + np.sin(rand)) * 0.5), np.sin(y + rand)]

    noise = np.array([[kernel(x, y) for x in range(size)] for y in range(size)])
    a = _param(level, 64)
    return np.clip((1 - a / 255) * img + a * noise, 0, 255).astype(np.uint8)


class _Perlin:
    """The generator's tables from the draws, and its noise / turbulence, one point at a time."""

    def __init__(self, gradients: np.ndarray, swaps: np.ndarray) -> None:
        self.g = np.zeros((256, 2))
        for k, v in enumerate(gradients):
            arr = (v % 512 - 256) / 256
            n = np.linalg.norm(arr)
            self.g[k] = arr / n if n > 0 else 0.0
        self.p = np.arange(512 + 2)
        for k, i in enumerate(range(255, -1, -1)):
            j = int(swaps[k])
            kept = self.p[i]
            self.p[i] = self.p[j]
            self.p[j] = kept
        for i in range(256 + 2):
            self.p[256 + i] = self.p[i]

    def noise(self, x: float, y: float) -> float:
        t = x + 4096
        bx0, rx0 = int(t) % 256, t % 1
        bx1, rx1 = (bx0 + 1) % 256, rx0 - 1.0
        t = y + 4096
        by0, ry0 = int(t) % 256, t % 1
        by1, ry1 = (by0 + 1) % 256, ry0 - 1.0
        i, j = self.p[bx0], self.p[bx1]
        g, p = self.g, self.p
        sx, sy = rx0 ** 2 * (3.0 - 2.0 * rx0), ry0 ** 2 * (3.0 - 2.0 * ry0)
        u = rx0 * g[p[i + by0], 0] + ry0 * g[p[i + by0], 1]
        v = rx1 * g[p[j + by0], 0] + ry0 * g[p[j + by0], 1]
        a = u + sx * (v - u)
        u = rx0 * g[p[i + by1], 0] + ry1 * g[p[i + by1], 1]
        v = rx1 * g[p[j + by1], 0] + ry1 * g[p[j + by1], 1]
        b = u + sx * (v - u)
        return 1.5 * (a + sy * (b - a))

    def turbulence(self, x: float, y: float, octaves: float) -> float:
        t, f = 0.0, 1.0
        while f <= octaves:
            t += np.abs(self.noise(f * x, f * y)) / f
            f *= 2
        return t


def perlin_noise(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    gen = _Perlin(d["gradients"], d["swaps"])
    m = np.array([[1, 0], [0, 1]]) / (32 * size / 224)

    def kernel(point: np.ndarray) -> np.ndarray:
        q = np.matmul(point, m)
        f = 0.5 * gen.turbulence(q[0], q[1], 16.0) + 0.5
        return np.clip(np.array([f, f, f]), 0, 1.0)

    noise = np.array([[kernel(np.array([y, x])) for x in range(size)] for y in range(size)])
    alpha = _param(level, 0.5)
    out = (1 - alpha) * img.astype(np.float32) + 255 * alpha * noise
    return np.clip(out, 0, 255).astype(np.uint8)


def _caustic(point: np.ndarray, time: float, period: float) -> np.ndarray:
    point = point / period
    p = (point % 1) * 6.28318530718 - 250
    i, c, inten = p.copy(), 1.0, 0.005
    for n in range(5):
        t = time * (1.0 - (3.5 / (n + 1)))
        i = p + np.array([np.cos(t - i[0]) + np.sin(t + i[1]), np.sin(t - i[1]) + np.cos(t + i[0])])
        length = np.sqrt((p[0] / (np.sin(i[0] + t) / inten)) ** 2
                         + (p[1] / (np.cos(i[1] + t) / inten)) ** 2)
        c += 1.0 / length
    c = 1.17 - (c / 5.0) ** 1.4
    colour = np.clip(np.abs(c) ** 8.0, 0, 1)
    return np.array([colour, colour, colour])


def _refract(normal: np.ndarray, eta: float) -> np.ndarray:
    incident = np.array([0.0, 0.0, 1.0])
    if np.abs(np.dot(incident, normal)) >= 1.0 - 1e-3:
        return incident
    angle = np.arccos(np.dot(incident, normal))
    out_angle = np.arcsin(np.sin(angle) / eta)
    spectator = np.cross(incident, normal)
    spectator /= np.linalg.norm(spectator)
    rotation = np.stack((normal, np.cross(normal, spectator), spectator), axis=0)
    return np.linalg.inv(rotation) @ np.array([np.cos(out_angle), np.sin(out_angle), 0.0])


def caustic_refraction(img: np.ndarray, level: float, d: dict) -> np.ndarray:
    size = img.shape[0]
    time, period = float(d["time"]), float(d["period"])
    lens_scale, lighting = _param(level, 0.5 * size), _param(level, 2.0)
    caustics = np.array([[_caustic(np.array([y, x]), time, period) for x in range(size)]
                         for y in range(size)])
    caustics = gaussian_filter(caustics, sigma=1)  # all three axes, as the reference
    image = img.astype(np.float32) / 255

    def luma(y: int, x: int) -> float:
        inside = 0 <= y < size and 0 <= x < size
        value = caustics[y, x, :] if inside else np.array([0.0, 0.0, 0.0])
        return float(np.dot(value, np.array([0.2126, 0.7152, 0.0722])))

    out = np.empty((size, size, 3))
    for y in range(size):
        for x in range(size):
            north, south = luma(y, x - 1), luma(y, x + 1)
            west, east = luma(y - 1, x), luma(y + 1, x)
            normal = np.array([east - west, south - north, 1.0])
            normal = normal / np.linalg.norm(normal)
            shift = np.round(_refract(normal, 4.0) * lens_scale, 3)
            pixel = _bilinear(image, np.array([y, x]) + shift[0:2])
            pixel = pixel + (north - south) * lighting
            pixel = pixel + (east - west) * lighting
            out[y, x] = np.clip(pixel, 0, 1)
    return np.clip((out * 255).astype(np.uint8), 0, 255)


REFERENCE = {f.__name__: f for f in (
    single_frequency_greyscale, cocentric_sine_waves, plasma_noise, perlin_noise,
    caustic_refraction)}
