"""Built-in demo dataset: procedurally generated, art-like images in ImageFolder layout.

``generate_demo_dataset(root)`` writes ``root/<class>/<class>_0000.jpg`` ... for every class
in :data:`DEMO_CLASSES`, so a new user can train without downloading anything.

* Deterministic: every image is painted from its own ``numpy.random.Generator`` seeded with
  ``(seed, crc32(class name), index)``, so the same parameters give byte-identical files
  (on the same numpy / Pillow build).
* Written once: a marker ``root/.complete`` holding the parameters as JSON is part of the
  finished dataset.  If it matches, the call returns immediately without touching anything.
* Crash / concurrency safe: the dataset is built in a temporary directory beside ``root``
  (marker written last) and moved into place with a single ``os.rename``; callers are
  serialised with an ``fcntl`` file lock beside ``root`` (e.g. DDP ranks), and where no lock
  is available the first rename wins and the loser discards its copy.

Only numpy and Pillow are used.  Each class is one small painter function
``painter(rng, size) -> PIL.Image.Image`` registered in :data:`_PAINTERS`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

try:  # POSIX advisory lock; on other platforms we rely on "first rename wins".
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["DEMO_CLASSES", "generate_demo_dataset", "render_demo_image"]

#: Bump when painters change so that existing demo datasets are regenerated.
DEMO_VERSION = 1
_MARKER = ".complete"
_JPEG_QUALITY = 92

Painter = Callable[[np.random.Generator, int], Image.Image]
RESAMPLE = Image.Resampling.LANCZOS

# --------------------------------------------------------------------------------------
# Colour helpers
# --------------------------------------------------------------------------------------

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


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
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


def _palette(rng: np.random.Generator, n: int = 5) -> np.ndarray:
    """``n`` harmonious colours, float array (n, 3) in [0, 255]."""
    if rng.random() < 0.5:
        base = np.array([_hex(c) for c in _PALETTES[rng.integers(len(_PALETTES))]], float)
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
        cols = _hsv_to_rgb(h, s, v)
    return np.clip(cols, 0, 255)


def _ramp(t: np.ndarray, colours: np.ndarray, stops: np.ndarray | None = None) -> np.ndarray:
    """Map scalar field ``t`` in [0, 1] through a multi-stop colour ramp -> (..., 3) float."""
    if stops is None:
        stops = np.linspace(0.0, 1.0, len(colours))
    return np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=-1)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinate grids in [0, 1], float32, shape (size, size)."""
    a = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(a, a, indexing="ij")


def _to_image(arr: np.ndarray, size: int) -> Image.Image:
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img if img.size == (size, size) else img.resize((size, size), RESAMPLE)


def _value_noise(rng: np.random.Generator, size: int, cells: int,
                 aspect: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Smooth value noise: a coarse random grid upsampled bicubically (fast, via Pillow)."""
    g = rng.random((cells * aspect[0] + 1, cells * aspect[1] + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.BICUBIC))


def _fractal_noise(rng: np.random.Generator, size: int, base: int = 2, octaves: int = 5,
                   persistence: float = 0.5, aspect: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Fractal (fBm) value noise normalised to [0, 1]."""
    out = np.zeros((size, size), np.float32)
    amp = 1.0
    for o in range(octaves):
        out += amp * _value_noise(rng, size, min(base * 2 ** o, size // 2), aspect)
        amp *= persistence
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _noise_1d(rng: np.random.Generator, n: int, octaves: int = 6, base: int = 2,
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


def _rgb(c: np.ndarray, alpha: int | None = None) -> tuple[int, ...]:
    t = tuple(int(v) for v in np.clip(c, 0, 255))
    return t if alpha is None else t + (int(alpha),)


# --------------------------------------------------------------------------------------
# Painters: one per class, painter(rng, size) -> RGB PIL image of (size, size)
# --------------------------------------------------------------------------------------


def _paint_brush_strokes(rng: np.random.Generator, size: int) -> Image.Image:
    """Thick curved bristle strokes (cubic Bezier paths) alpha-blended on primed canvas."""
    S = 2 * size  # supersample for smooth stroke edges
    y, x = _grid(S)
    canvas = np.array([236, 226, 206], np.float32) + rng.integers(-25, 15, 3)
    weave = 4 * np.sin(x * S * 1.7) * np.sin(y * S * 1.7)  # linen weave
    img = (canvas + (weave + rng.normal(0, 3, (S, S)))[..., None]).astype(np.float32)
    pal = _palette(rng, 5)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    n = int(rng.integers(40, 75))
    for k in range(n):
        # Bezier from a random start along a random heading, with bent control points.
        length = S * rng.uniform(0.3, 0.9)
        ang = rng.normal(rng.uniform(0, np.pi), 0.5) if k == 0 else rng.uniform(0, 2 * np.pi)
        p0 = rng.uniform(-0.1, 1.1, 2) * S
        d = np.array([np.cos(ang), np.sin(ang)])
        nrm = np.array([-d[1], d[0]])
        p3 = p0 + d * length
        p1 = p0 + d * length / 3 + nrm * rng.normal(0, 0.25) * length
        p2 = p0 + 2 * d * length / 3 + nrm * rng.normal(0, 0.25) * length
        pts = ((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1
               + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3)
        tan = np.gradient(pts, axis=0)
        normal = np.stack([-tan[:, 1], tan[:, 0]], 1) / (np.linalg.norm(tan, axis=1)[:, None] + 1e-9)
        width = S * np.interp(k, [0, n], [0.16, 0.03]) * rng.uniform(0.7, 1.3)  # broad first
        taper = np.sin(np.pi * np.clip(t[:, 0] * 1.1, 0, 1)) ** 0.3 * 0.5 + 0.5  # brush lifts off
        mask = Image.new("L", (S, S), 0)
        draw = ImageDraw.Draw(mask)
        m = int(rng.integers(5, 10))  # bristles
        for j in range(m):
            off = (j / (m - 1) - 0.5) * width * taper[:, None] * normal
            line = [tuple(p) for p in (pts + off).tolist()]
            draw.line(line, fill=int(rng.integers(120, 256)),
                      width=max(1, int(width / m * rng.uniform(1.6, 2.8))))
        box = mask.getbbox()
        if box is None:
            continue
        l, u, r, b = box
        a = np.asarray(mask.crop(box), np.float32)[..., None] * np.float32(rng.uniform(0.6, 0.95) / 255.0)
        col = (pal[k % len(pal)] + rng.normal(0, 12, 3)).astype(np.float32)
        patch = img[u:b, l:r]
        patch += a * (col - patch)  # in-place alpha blend
    return _to_image(img, size)


def _paint_gradients(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth multi-stop linear / radial / conic gradient with soft colour blobs."""
    y, x = _grid(size)
    kind = rng.integers(3)
    if kind == 0:  # linear
        a = rng.uniform(0, 2 * np.pi)
        t = (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a)
    elif kind == 1:  # radial
        cy, cx = rng.uniform(0.1, 0.9, 2)
        t = np.hypot(y - cy, x - cx)
    else:  # conic, mirrored so it has no seam
        cy, cx = rng.uniform(0.25, 0.75, 2)
        t = np.abs(((np.arctan2(y - cy, x - cx) / (2 * np.pi) + rng.random()) % 1.0) * 2 - 1)
    t = t + rng.uniform(0, 0.06) * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * (x + y) + rng.random()))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    n = int(rng.integers(3, 6))
    stops = np.concatenate([[0.0], np.sort(rng.uniform(0.1, 0.9, n - 2)), [1.0]])
    img = _ramp(t, _palette(rng, n), stops)
    for _ in range(int(rng.integers(2, 8))):  # soft blobs
        cy, cx = rng.uniform(-0.1, 1.1, 2)
        sy, sx = rng.uniform(0.04, 0.3, 2)
        a = rng.uniform(0.3, 0.85) * np.exp(-((y - cy) ** 2 / (2 * sy ** 2) + (x - cx) ** 2 / (2 * sx ** 2)))
        img = img * (1 - a[..., None]) + _palette(rng, 1)[0] * a[..., None]
    img += rng.normal(0, 2.0, (size, size, 1))  # paper grain
    return _to_image(img, size)


def _mondrian(rng: np.random.Generator, S: int) -> Image.Image:
    img = Image.new("RGB", (S, S), (240, 236, 224))
    draw = ImageDraw.Draw(img)
    colours = [(221, 33, 28), (18, 52, 160), (250, 204, 20), (20, 20, 20)]
    lw = max(2, int(S * rng.uniform(0.015, 0.03)))

    def split(x0: float, y0: float, x1: float, y1: float, depth: int) -> None:
        w, h = x1 - x0, y1 - y0
        if depth == 0 or max(w, h) < S * 0.12 or (depth < 3 and rng.random() < 0.25):
            if rng.random() < 0.35:
                draw.rectangle([x0, y0, x1, y1], fill=colours[rng.integers(len(colours))])
            draw.rectangle([x0, y0, x1, y1], outline=(15, 15, 15), width=lw)
            return
        if w > h or (w == h and rng.random() < 0.5):
            c = x0 + w * rng.uniform(0.25, 0.75)
            split(x0, y0, c, y1, depth - 1)
            split(c, y0, x1, y1, depth - 1)
        else:
            c = y0 + h * rng.uniform(0.25, 0.75)
            split(x0, y0, x1, c, depth - 1)
            split(x0, c, x1, y1, depth - 1)

    split(-lw, -lw, S + lw, S + lw, int(rng.integers(3, 6)))
    return img


def _kandinsky(rng: np.random.Generator, S: int) -> Image.Image:
    bg = _palette(rng, 1)[0] * 0.25 + np.array([235, 225, 200]) * 0.75
    img = Image.new("RGB", (S, S), _rgb(bg))
    draw = ImageDraw.Draw(img, "RGBA")  # RGBA fills are alpha-blended onto the RGB canvas
    pal = _palette(rng, 6)
    dark = (25, 22, 30)
    for _ in range(int(rng.integers(10, 22))):
        col = pal[rng.integers(len(pal))]
        alpha = int(rng.integers(150, 256))
        cx, cy = rng.uniform(0, S, 2)
        r = S * rng.uniform(0.04, 0.25)
        shape = rng.integers(6)
        if shape == 0:  # concentric circles
            radii = np.linspace(r, r * rng.uniform(0.2, 0.5), int(rng.integers(2, 5)))
            for i, rr in enumerate(radii):
                ring = pal[(i + 1) % len(pal)] if i else col
                draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=_rgb(ring, alpha))
        elif shape == 1:  # triangle
            a0 = rng.uniform(0, 2 * np.pi)
            pts = [(cx + r * np.cos(a0 + i * 2.1 + rng.normal(0, 0.2)),
                    cy + r * np.sin(a0 + i * 2.1 + rng.normal(0, 0.2))) for i in range(3)]
            draw.polygon(pts, fill=_rgb(col, alpha))
        elif shape == 2:  # rotated rectangle (suprematist bar)
            a0 = rng.uniform(0, np.pi)
            w, h = r * rng.uniform(1, 2.5), r * rng.uniform(0.15, 0.6)
            c, s = np.cos(a0), np.sin(a0)
            pts = [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in
                   [(-w, -h), (w, -h), (w, h), (-w, h)]]
            draw.polygon(pts, fill=_rgb(col, alpha))
        elif shape == 3:  # bundle of straight lines
            a0 = rng.uniform(0, np.pi)
            for i in range(int(rng.integers(1, 5))):
                off = i * S * 0.02
                d = np.array([np.cos(a0), np.sin(a0)]) * S * rng.uniform(0.3, 0.9)
                draw.line([(cx - d[0] + off, cy - d[1]), (cx + d[0] + off, cy + d[1])],
                          fill=dark, width=max(1, int(S * rng.uniform(0.004, 0.015))))
        elif shape == 4:  # arc
            draw.arc([cx - r, cy - r, cx + r, cy + r], float(rng.uniform(0, 360)), float(rng.uniform(0, 360)),
                     fill=dark, width=max(1, int(S * 0.012)))
        else:  # small checkerboard
            n, cell = int(rng.integers(2, 5)), r / 2
            for i in range(n):
                for j in range(n):
                    if (i + j) % 2 == 0:
                        draw.rectangle([cx + i * cell, cy + j * cell, cx + (i + 1) * cell, cy + (j + 1) * cell],
                                       fill=_rgb(col, alpha))
    return img


def _paint_geometric(rng: np.random.Generator, size: int) -> Image.Image:
    """Mondrian grids or Kandinsky / suprematist compositions of circles, bars, lines."""
    S = 2 * size
    img = _mondrian(rng, S) if rng.random() < 0.35 else _kandinsky(rng, S)
    arr = np.asarray(img, np.float32) + rng.normal(0, 3, (S, S, 1))  # printed-paper grain
    return _to_image(arr, size)


def _paint_textures(rng: np.random.Generator, size: int) -> Image.Image:
    """Coloured procedural textures: clouds, marble, wood rings, warped stripes/checkers."""
    y, x = _grid(size)
    turb = _fractal_noise(rng, size, base=int(rng.integers(2, 5)), octaves=5, persistence=rng.uniform(0.45, 0.7))
    kind = rng.integers(5)
    if kind == 0:  # fractal clouds / fBm
        t = turb
    elif kind == 1:  # marble
        a = rng.uniform(0, np.pi)
        f = rng.uniform(2, 6)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * (x * np.cos(a) + y * np.sin(a)) + rng.uniform(4, 10) * turb)
    elif kind == 2:  # wood rings
        cy, cx = rng.uniform(-0.5, 1.5, 2)
        r = np.hypot(y - cy, x - cx)
        t = (r * rng.uniform(6, 16) + rng.uniform(1, 3) * turb) % 1.0
        t = t ** rng.uniform(0.5, 2)
    elif kind == 3:  # domain-warped stripes
        f = rng.uniform(4, 12)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * (x + rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * 3 * y) + 0.3 * turb))
    else:  # distorted checker
        f = int(rng.integers(4, 10))
        wx = x + 0.15 * (turb - 0.5)
        wy = y + 0.15 * (_value_noise(rng, size, 3) - 0.5)
        t = ((np.floor(wx * f) + np.floor(wy * f)) % 2) * 0.7 + 0.3 * turb
    fine = _fractal_noise(rng, size, base=16, octaves=2)  # fine grain detail
    t = np.clip(0.85 * t + 0.15 * fine, 0, 1)
    n = int(rng.integers(3, 6))
    return _to_image(_ramp(t, _palette(rng, n)), size)


_SKIES = {  # sky top, sky horizon, sun/moon, far mountain, near mountain
    "day": ("#3a6ea5", "#bfe0f0", "#fff6d5", "#8aa6c1", "#2f4a3a"),
    "sunset": ("#2b2d5c", "#f6a35c", "#ffe08a", "#b0687a", "#2a1b2e"),
    "dusk": ("#1c2541", "#a05c7b", "#f7d6bf", "#6b5b95", "#141726"),
    "night": ("#050818", "#24345e", "#f2f2e6", "#2c3a5c", "#0b0f1c"),
    "misty": ("#9fb1bc", "#e6e1d3", "#fffaf0", "#a3a9a0", "#3f4a44"),
}


def _paint_landscapes(rng: np.random.Generator, size: int) -> Image.Image:
    """Sky gradient, sun/moon with glow, clouds, layered noise mountains, optional lake."""
    S = size  # edges are anti-aliased analytically, no supersampling needed
    y, x = _grid(S)
    name = list(_SKIES)[rng.integers(len(_SKIES))]
    top, hor, sun, far, near = (np.array(_hex(c), float) + rng.normal(0, 12, 3) for c in _SKIES[name])
    horizon = rng.uniform(0.55, 0.8)
    t = np.clip(y / horizon, 0, 1) ** rng.uniform(0.7, 1.6)
    img = _ramp(t, np.stack([top, hor]))
    if name == "night":  # stars
        stars = (rng.random((S, S)) < 0.004) * rng.uniform(80, 255, (S, S)) * (y < horizon)
        img += stars[..., None]
    # sun / moon with glow
    sy, sx, sr = rng.uniform(0.08, 0.45 * horizon), rng.uniform(0.15, 0.85), rng.uniform(0.04, 0.09)
    d = np.hypot(y - sy, x - sx)
    glow = np.clip(1.0 - d / (sr * rng.uniform(3, 6)), 0, 1) ** 2 * 0.6
    disc = np.clip((sr - d) * S * 0.5, 0, 1)
    a = np.maximum(glow, disc)[..., None]
    img = img * (1 - a) + sun * a
    # horizontally stretched clouds
    if name != "night" and rng.random() < 0.8:
        c = _fractal_noise(rng, S, base=2, octaves=5, aspect=(2, 1))
        c = np.clip((c - rng.uniform(0.45, 0.65)) * 3, 0, 1) * (y < horizon)
        img = img * (1 - 0.8 * c[..., None]) + (hor * 0.5 + 128) * 0.8 * c[..., None]
    # mountain layers, far (hazy, light) to near (dark)
    layers = int(rng.integers(3, 6))
    lake = rng.random() < 0.4
    for i in range(layers):
        f = i / max(layers - 1, 1)
        col = far * (1 - f) + near * f
        base = horizon - (1 - f) * rng.uniform(0.15, 0.3) + (0 if lake else f * 0.15)
        amp = rng.uniform(0.08, 0.25) * (1 - 0.4 * f)
        ridge = base - amp * _noise_1d(rng, S, octaves=int(rng.integers(4, 8)), persistence=rng.uniform(0.4, 0.6))
        inside = np.clip((y - ridge[None, :]) * S, 0, 1)  # anti-aliased edge
        if lake:
            inside *= y < horizon
        shade = col * (1 - 0.25 * np.clip((y - ridge[None, :]) / 0.3, 0, 1))[..., None]  # darker downwards
        img = img * (1 - inside[..., None]) + shade * inside[..., None]
    if lake:  # mirrored reflection with ripples
        below = y >= horizon
        src_row = np.clip((2 * horizon - y) * S, 0, S - 1).astype(int)
        ripple = (np.sin(y * S * 0.9 + 3 * np.sin(x * 9)) * 4).astype(int)
        refl = img[src_row, np.clip(np.arange(S)[None, :] + ripple, 0, S - 1)]
        refl = refl * 0.7 + np.array([20, 30, 45]) * 0.3
        img = np.where(below[..., None], refl, img)
    img += rng.normal(0, 2.5, (S, S, 1))
    return _to_image(img, size)


def _paint_stained_glass(rng: np.random.Generator, size: int) -> Image.Image:
    """Voronoi glass panes with dark leading, per-pane mottling and back-light."""
    S = size  # lead lines are anti-aliased analytically, no supersampling needed
    y, x = _grid(S)
    n = int(rng.integers(18, 60))
    pts = rng.random((n, 2)).astype(np.float32)
    d = (y[..., None] - pts[:, 0]) ** 2 + (x[..., None] - pts[:, 1]) ** 2  # (S, S, n)
    order = np.argpartition(d, 1, axis=-1)[..., :2]  # [0] nearest, [1] second nearest
    d1, d2 = np.sqrt(np.take_along_axis(d, order, -1)).transpose(2, 0, 1)
    cell = order[..., 0]
    pal = _palette(rng, 6)
    cols = pal[rng.integers(len(pal), size=n)] + rng.normal(0, 15, (n, 3))
    img = cols[cell]
    mottle = _fractal_noise(rng, S, base=8, octaves=3)
    ly, lx = rng.uniform(0, 1, 2)
    light = 1.15 - 0.6 * np.hypot(y - ly, x - lx)
    img = img * (light * (0.8 + 0.35 * mottle))[..., None]
    lead = np.clip(((d2 - d1) - rng.uniform(0.004, 0.01)) * S * 0.7, 0, 1)  # 0 on the lead lines
    img = img * lead[..., None] + np.array([28, 26, 30]) * (1 - lead[..., None])
    return _to_image(img, size)


def _paint_pointillism(rng: np.random.Generator, size: int) -> Image.Image:
    """Seurat-like dots sampled from a blurred under-painting, on a light ground."""
    S = 2 * size
    under = np.asarray((_paint_landscapes if rng.random() < 0.5 else _paint_gradients)(rng, 32)
                       .resize((S, S), Image.Resampling.BICUBIC), np.float32)
    ground = 0.5 * (np.array([240, 234, 220]) + rng.integers(-15, 10, 3)) + 0.5 * under.mean((0, 1))
    img = Image.new("RGB", (S, S), _rgb(ground))
    draw = ImageDraw.Draw(img)
    r = S * rng.uniform(0.012, 0.022)
    n = int(3.0 * (S / r) ** 2 / np.pi)
    cx = rng.uniform(0, S, n)
    cy = rng.uniform(0, S, n)
    rr = r * rng.uniform(0.7, 1.3, n)
    base = under[cy.astype(int).clip(0, S - 1), cx.astype(int).clip(0, S - 1)]
    grey = base.mean(1, keepdims=True)
    base = grey + 1.4 * (base - grey)  # Seurat's dabs are purer than the scene they paint
    cols = np.clip(base * rng.uniform(0.88, 1.12, (n, 1)) + rng.normal(0, 12, (n, 3)), 0, 255).astype(int)
    for px, py, pr, c in zip(cx.tolist(), cy.tolist(), rr.tolist(), cols.tolist()):
        draw.ellipse([px - pr, py - pr, px + pr, py + pr], fill=tuple(c))
    return _to_image(np.asarray(img, np.float32), size)


_PAINTERS: dict[str, Painter] = {
    "brush_strokes": _paint_brush_strokes,
    "gradients": _paint_gradients,
    "geometric": _paint_geometric,
    "textures": _paint_textures,
    "landscapes": _paint_landscapes,
    "stained_glass": _paint_stained_glass,
    "pointillism": _paint_pointillism,
}

#: Class (= folder) names of the demo dataset, in label order.
DEMO_CLASSES: tuple[str, ...] = tuple(_PAINTERS)


# --------------------------------------------------------------------------------------
# Dataset generation
# --------------------------------------------------------------------------------------


def render_demo_image(class_name: str, index: int, image_size: int = 128, seed: int = 0) -> Image.Image:
    """Paint one demo image (RGB, ``image_size`` square); deterministic in all arguments."""
    rng = np.random.default_rng([int(seed), zlib.crc32(class_name.encode()), int(index)])
    img = _PAINTERS[class_name](rng, int(image_size))
    assert img.mode == "RGB" and img.size == (image_size, image_size)
    return img


def _params(images_per_class: int, image_size: int, seed: int) -> dict:
    return {"images_per_class": images_per_class, "image_size": image_size, "seed": seed,
            "version": DEMO_VERSION, "classes": list(DEMO_CLASSES)}


def _is_complete(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / _MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def _looks_like_demo(root: Path) -> bool:
    """True if ``root`` only holds demo-dataset entries, so it is safe to replace."""
    allowed = set(DEMO_CLASSES) | {_MARKER}
    try:
        return all(p.name in allowed for p in root.iterdir())
    except NotADirectoryError:
        return False


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (no-op where fcntl is unavailable)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_dataset(dst: Path, params: dict) -> None:
    n, size, seed = params["images_per_class"], params["image_size"], params["seed"]
    for name in DEMO_CLASSES:
        (dst / name).mkdir()
        for i in range(n):
            render_demo_image(name, i, size, seed).save(
                dst / name / f"{name}_{i:04d}.jpg", quality=_JPEG_QUALITY, subsampling=0)
    tmp_marker = dst / (_MARKER + ".tmp")
    tmp_marker.write_text(json.dumps(params, sort_keys=True))
    os.replace(tmp_marker, dst / _MARKER)  # marker last


def generate_demo_dataset(root, images_per_class: int = 48, image_size: int = 128, seed: int = 0) -> Path:
    """Create (once) the procedural demo ImageFolder at ``root`` and return ``root``.

    Layout: ``root/<class>/<class>_<i:04d>.jpg`` for every class in :data:`DEMO_CLASSES`.
    Returns immediately if ``root/.complete`` records the same parameters.  Otherwise the
    dataset is (re)built in a temporary directory beside ``root`` and renamed into place, so an
    interrupted run never leaves a dataset that looks complete.  An existing ``root`` is only
    replaced if it contains nothing but demo-dataset entries; otherwise ``FileExistsError``.
    """
    root = Path(root).expanduser()
    images_per_class, image_size, seed = int(images_per_class), int(image_size), int(seed)
    if images_per_class < 1 or image_size < 16 or seed < 0:
        raise ValueError("need images_per_class >= 1, image_size >= 16 and seed >= 0")
    params = _params(images_per_class, image_size, seed)
    if _is_complete(root, params):
        return root

    parent = root.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    with _lock(parent / f".{root.name}.lock"):
        if _is_complete(root, params):  # another process finished while we waited
            return root
        if root.exists() and not _looks_like_demo(root):
            raise FileExistsError(f"{root} exists and does not look like a demo dataset; refusing to replace it")
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=parent))
        try:
            _write_dataset(tmp, params)
            if root.exists():  # stale / partial / other parameters: move aside, then swap
                old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=parent))
                os.rename(root, old / "data")
                shutil.rmtree(old, ignore_errors=True)
            try:
                os.rename(tmp, root)
            except OSError:  # lost a race (no lock available): keep the winner if it is good
                if not _is_complete(root, params):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
