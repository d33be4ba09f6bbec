"""Colour and noise helpers shared by the demo painters: palettes, colour ramps, coordinate grids, value / fractal
noise, HSV conversion and the final array -> PIL image step. numpy and Pillow only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESAMPLE = Image.Resampling.LANCZOS

# Hand-picked palettes (Van Gogh blues/yellows, earthy, pastel, ...), jittered per image.
_PALETTES = [
    ("#1d3557", "#457b9d", "#a8dadc", "#f1faee", "#e63946"),
    ("#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51"),
    ("#0b1d51", "#2541b2", "#f2c14e", "#f78154", "#4d9078"),
    ("#5f0f40", "#9a031e", "#fb8b24", "#e36414", "#0f4c5c"),
    ("#283618", "#606c38", "#fefae0", "#dda15e", "#bc6c25"),
    ("#ffcdb2", "#ffb4a2", "#e5989b", "#b5838d", "#6d6875"),
    ("#03045e", "#0077b6", "#00b4d8", "#90e0ef", "#caf0f8"),
    ("#3d405b", "#81b29a", "#f2cc8f", "#e07a5f", "#f4f1de"),
    ("#22223b", "#4a4e69", "#9a8c98", "#c9ada7", "#f2e9e4"),
    ("#003049", "#d62828", "#f77f00", "#fcbf49", "#eae2b7"),
]


def hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0, 1]) -> RGB float array in [0, 255], shape (..., 3)."""
    h = (np.asarray(h, dtype=np.float64) % 1.0) * 6.0
    s, v = np.asarray(s, dtype=np.float64), np.asarray(v, dtype=np.float64)
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1) * 255.0


def palette(rng: np.random.Generator, n: int = 5) -> np.ndarray:
    """``n`` harmonious colours, float array (n, 3) in [0, 255]."""
    if rng.random() < 0.5:
        base = np.array([hex(c) for c in _PALETTES[rng.integers(len(_PALETTES))]], float)
        base = base[rng.permutation(len(base))]
        cols = base[np.arange(n) % len(base)] + rng.normal(0, 10, (n, 3))
    else:
        h0 = rng.random()
        scheme = rng.integers(3)  # analogous, complementary, triadic
        offsets = [np.array([0.0, 0.06, -0.06, 0.12]), np.array([0.0, 0.5, 0.04, 0.54]),
                   np.array([0.0, 1 / 3, 2 / 3, 0.05])][scheme]
        h = h0 + offsets[np.arange(n) % len(offsets)] + rng.normal(0, 0.015, n)
        s = rng.uniform(0.35, 0.95, n)
        v = rng.uniform(0.35, 1.0, n)
        cols = hsv_to_rgb(h, s, v)
    return np.clip(cols, 0, 255)


def ramp(t: np.ndarray, colours: np.ndarray, stops: np.ndarray | None = None) -> np.ndarray:
    """Map scalar field ``t`` in [0, 1] through a multi-stop colour ramp -> (..., 3) float."""
    if stops is None:
        stops = np.linspace(0.0, 1.0, len(colours))
    return np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=-1)


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinate grids in [0, 1], float32, shape (size, size)."""
    a = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(a, a, indexing="ij")


def to_image(arr: np.ndarray, size: int) -> Image.Image:
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img if img.size == (size, size) else img.resize((size, size), RESAMPLE)


def value_noise(rng: np.random.Generator, size: int, cells: int,
                 aspect: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Smooth value noise: a coarse random grid upsampled bicubically (fast, via Pillow)."""
    g = rng.random((cells * aspect[0] + 1, cells * aspect[1] + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.BICUBIC))


def fractal_noise(rng: np.random.Generator, size: int, base: int = 2, octaves: int = 5,
                   persistence: float = 0.5, aspect: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Fractal (fBm) value noise normalised to [0, 1]."""
    out = np.zeros((size, size), np.float32)
    amp = 1.0
    for o in range(octaves):
        out += amp * value_noise(rng, size, min(base * 2 ** o, size // 2), aspect)
        amp *= persistence
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def noise_1d(rng: np.random.Generator, n: int, octaves: int = 6, base: int = 2,
              persistence: float = 0.5) -> np.ndarray:
    """Piecewise-linear 1-D fractal noise in [0, 1] (sharp, mountain-like ridges)."""
    x = np.linspace(0.0, 1.0, n)
    out = np.zeros(n)
    amp = 1.0
    for o in range(octaves):
        k = base * 2 ** o + 1
        out += amp * np.interp(x, np.linspace(0, 1, k), rng.random(k))
        amp *= persistence
    out -= out.min()
    return out / max(out.max(), 1e-9)


def rgb(c: np.ndarray, alpha: int | None = None) -> tuple[int, ...]:
    t = tuple(int(v) for v in np.clip(c, 0, 255))
    return t if alpha is None else t + (int(alpha),)
