"""The demo classes: one painter per class in :data:`_PAINTERS`, and :func:`render_demo_image`.

Every image is painted from its own ``numpy.random.Generator`` seeded with ``(seed, crc32(class name), index)``,
so the same arguments give the same pixels (on the same numpy / Pillow build).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from art_diffusion.data.demo.drawn import (
    paint_brush_strokes,
    paint_geometric,
    paint_pointillism,
)
from art_diffusion.data.demo.fields import (
    paint_gradients,
    paint_landscapes,
    paint_stained_glass,
    paint_textures,
)

#: Bump when painters change so that existing demo datasets are regenerated.
DEMO_VERSION = 1

Painter = Callable[[np.random.Generator, int], Image.Image]

_PAINTERS: dict[str, Painter] = {
    "brush_strokes": paint_brush_strokes,
    "gradients": paint_gradients,
    "geometric": paint_geometric,
    "textures": paint_textures,
    "landscapes": paint_landscapes,
    "stained_glass": paint_stained_glass,
    "pointillism": paint_pointillism,
}

#: Class (= folder) names of the demo dataset, in label order.
DEMO_CLASSES: tuple[str, ...] = tuple(_PAINTERS)


def render_demo_image(class_name: str, index: int, image_size: int = 128, seed: int = 0) -> Image.Image:
    """Paint one demo image (RGB, ``image_size`` square); deterministic in all arguments."""
    rng = np.random.default_rng([int(seed), zlib.crc32(class_name.encode()), int(index)])
    img = _PAINTERS[class_name](rng, int(image_size))
    assert img.mode == "RGB" and img.size == (image_size, image_size)
    return img
