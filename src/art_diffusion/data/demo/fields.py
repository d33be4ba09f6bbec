"""Demo painters that compute every pixel from numpy fields: gradients, textures, landscapes, stained glass.

Each painter is ``painter(rng, size) -> RGB PIL image of (size, size)``; registered in :mod:`.painters`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from art_diffusion.data.demo.canvas import (
    fractal_noise,
    grid,
    hex,
    noise_1d,
    palette,
    ramp,
    to_image,
    value_noise,
)


def paint_gradients(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth multi-stop linear / radial / conic gradient with soft colour blobs."""
    y, x = grid(size)
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
    img = ramp(t, palette(rng, n), stops)
    for _ in range(int(rng.integers(2, 8))):  # soft blobs
        cy, cx = rng.uniform(-0.1, 1.1, 2)
        sy, sx = rng.uniform(0.04, 0.3, 2)
        a = rng.uniform(0.3, 0.85) * np.exp(-((y - cy) ** 2 / (2 * sy ** 2) + (x - cx) ** 2 / (2 * sx ** 2)))
        img = img * (1 - a[..., None]) + palette(rng, 1)[0] * a[..., None]
    img += rng.normal(0, 2.0, (size, size, 1))  # paper grain
    return to_image(img, size)


def paint_textures(rng: np.random.Generator, size: int) -> Image.Image:
    """Coloured procedural textures: clouds, marble, wood rings, warped stripes/checkers."""
    y, x = grid(size)
    turb = fractal_noise(rng, size, base=int(rng.integers(2, 5)), octaves=5, persistence=rng.uniform(0.45, 0.7))
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
        wy = y + 0.15 * (value_noise(rng, size, 3) - 0.5)
        t = ((np.floor(wx * f) + np.floor(wy * f)) % 2) * 0.7 + 0.3 * turb
    fine = fractal_noise(rng, size, base=16, octaves=2)  # fine grain detail
    t = np.clip(0.85 * t + 0.15 * fine, 0, 1)
    n = int(rng.integers(3, 6))
    return to_image(ramp(t, palette(rng, n)), size)


_SKIES = {  # sky top, sky horizon, sun/moon, far mountain, near mountain
    "day": ("#3a6ea5", "#bfe0f0", "#fff6d5", "#8aa6c1", "#2f4a3a"),
    "sunset": ("#2b2d5c", "#f6a35c", "#ffe08a", "#b0687a", "#2a1b2e"),
    "dusk": ("#1c2541", "#a05c7b", "#f7d6bf", "#6b5b95", "#141726"),
    "night": ("#050818", "#24345e", "#f2f2e6", "#2c3a5c", "#0b0f1c"),
    "misty": ("#9fb1bc", "#e6e1d3", "#fffaf0", "#a3a9a0", "#3f4a44"),
}


def paint_landscapes(rng: np.random.Generator, size: int) -> Image.Image:
    """Sky gradient, sun/moon with glow, clouds, layered noise mountains, optional lake."""
    S = size  # edges are anti-aliased analytically, no supersampling needed
    y, x = grid(S)
    name = list(_SKIES)[rng.integers(len(_SKIES))]
    top, hor, sun, far, near = (np.array(hex(c), float) + rng.normal(0, 12, 3) for c in _SKIES[name])
    horizon = rng.uniform(0.55, 0.8)
    t = np.clip(y / horizon, 0, 1) ** rng.uniform(0.7, 1.6)
    img = ramp(t, np.stack([top, hor]))
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
        c = fractal_noise(rng, S, base=2, octaves=5, aspect=(2, 1))
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
        ridge = base - amp * noise_1d(rng, S, octaves=int(rng.integers(4, 8)), persistence=rng.uniform(0.4, 0.6))
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
    return to_image(img, size)


def paint_stained_glass(rng: np.random.Generator, size: int) -> Image.Image:
    """Voronoi glass panes with dark leading, per-pane mottling and back-light."""
    S = size  # lead lines are anti-aliased analytically, no supersampling needed
    y, x = grid(S)
    n = int(rng.integers(18, 60))
    pts = rng.random((n, 2)).astype(np.float32)
    d = (y[..., None] - pts[:, 0]) ** 2 + (x[..., None] - pts[:, 1]) ** 2  # (S, S, n)
    order = np.argpartition(d, 1, axis=-1)[..., :2]  # [0] nearest, [1] second nearest
    d1, d2 = np.sqrt(np.take_along_axis(d, order, -1)).transpose(2, 0, 1)
    cell = order[..., 0]
    pal = palette(rng, 6)
    cols = pal[rng.integers(len(pal), size=n)] + rng.normal(0, 15, (n, 3))
    img = cols[cell]
    mottle = fractal_noise(rng, S, base=8, octaves=3)
    ly, lx = rng.uniform(0, 1, 2)
    light = 1.15 - 0.6 * np.hypot(y - ly, x - lx)
    img = img * (light * (0.8 + 0.35 * mottle))[..., None]
    lead = np.clip(((d2 - d1) - rng.uniform(0.004, 0.01)) * S * 0.7, 0, 1)  # 0 on the lead lines
    img = img * lead[..., None] + np.array([28, 26, 30]) * (1 - lead[..., None])
    return to_image(img, size)

