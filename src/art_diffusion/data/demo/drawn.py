"""Demo painters that draw shapes with ``PIL.ImageDraw``: brush strokes, geometric compositions, pointillism.

Each painter is ``painter(rng, size) -> RGB PIL image of (size, size)``; registered in :mod:`.painters`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from art_diffusion.data.demo.canvas import grid, palette, rgb, to_image
from art_diffusion.data.demo.fields import paint_gradients, paint_landscapes


def paint_brush_strokes(rng: np.random.Generator, size: int) -> Image.Image:
    """Thick curved bristle strokes (cubic Bezier paths) alpha-blended on primed canvas."""
    S = 2 * size  # supersample for smooth stroke edges
    y, x = grid(S)
    canvas = np.array([236, 226, 206], np.float32) + rng.integers(-25, 15, 3)
    weave = 4 * np.sin(x * S * 1.7) * np.sin(y * S * 1.7)  # linen weave
    img = (canvas + (weave + rng.normal(0, 3, (S, S)))[..., None]).astype(np.float32)
    pal = palette(rng, 5)
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
    return to_image(img, size)


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
    bg = palette(rng, 1)[0] * 0.25 + np.array([235, 225, 200]) * 0.75
    img = Image.new("RGB", (S, S), rgb(bg))
    draw = ImageDraw.Draw(img, "RGBA")  # RGBA fills are alpha-blended onto the RGB canvas
    pal = palette(rng, 6)
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
                draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=rgb(ring, alpha))
        elif shape == 1:  # triangle
            a0 = rng.uniform(0, 2 * np.pi)
            pts = [(cx + r * np.cos(a0 + i * 2.1 + rng.normal(0, 0.2)),
                    cy + r * np.sin(a0 + i * 2.1 + rng.normal(0, 0.2))) for i in range(3)]
            draw.polygon(pts, fill=rgb(col, alpha))
        elif shape == 2:  # rotated rectangle (suprematist bar)
            a0 = rng.uniform(0, np.pi)
            w, h = r * rng.uniform(1, 2.5), r * rng.uniform(0.15, 0.6)
            c, s = np.cos(a0), np.sin(a0)
            pts = [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in
                   [(-w, -h), (w, -h), (w, h), (-w, h)]]
            draw.polygon(pts, fill=rgb(col, alpha))
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
                                       fill=rgb(col, alpha))
    return img


def paint_geometric(rng: np.random.Generator, size: int) -> Image.Image:
    """Mondrian grids or Kandinsky / suprematist compositions of circles, bars, lines."""
    S = 2 * size
    img = _mondrian(rng, S) if rng.random() < 0.35 else _kandinsky(rng, S)
    arr = np.asarray(img, np.float32) + rng.normal(0, 3, (S, S, 1))  # printed-paper grain
    return to_image(arr, size)


def paint_pointillism(rng: np.random.Generator, size: int) -> Image.Image:
    """Seurat-like dots sampled from a blurred under-painting, on a light ground."""
    S = 2 * size
    under = np.asarray((paint_landscapes if rng.random() < 0.5 else paint_gradients)(rng, 32)
                       .resize((S, S), Image.Resampling.BICUBIC), np.float32)
    ground = 0.5 * (np.array([240, 234, 220]) + rng.integers(-15, 10, 3)) + 0.5 * under.mean((0, 1))
    img = Image.new("RGB", (S, S), rgb(ground))
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
    return to_image(np.asarray(img, np.float32), size)
