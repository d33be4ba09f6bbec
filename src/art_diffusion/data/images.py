"""Decoding one image file into a fixed-size RGB uint8 array, or a reason why it cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class BadImage(Exception):
    """A file that cannot serve as a training image; ``str(exc)`` is the human-readable reason."""


def load_rgb(path: str | Path, size: int | None) -> np.ndarray:
    """Decode ``path`` and resize it to ``size`` x ``size`` (aspect squashed, as the article does). HWC uint8.

    ``size=None`` keeps the native resolution (full-resolution inference).
    """
    try:
        with Image.open(path) as img:
            if size is None:
                return np.array(img.convert("RGB"), dtype=np.uint8)
            # JPEG draft mode decodes at a reduced scale when the target is much smaller: far less work.
            img.draft("RGB", (size, size))
            img = img.convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=3.0)
            return np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImage(f"{type(exc).__name__}: {exc}") from exc
