"""Decoding one image file into a fixed-size RGB uint8 array, or a short reason why it cannot be used.

Real art folders hold HTML error pages saved as .jpg, truncated downloads, decompression bombs, CMYK and
16-bit files, transparent PNGs and EXIF-rotated photos. Every failure becomes a :class:`BadImage` whose
``reason`` is one of :data:`REASONS` (the column the bad-file report is grouped by) and whose ``detail`` says
what exactly was wrong. Only numpy and Pillow are imported here: pool workers that decode start fast.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from art_diffusion.storage.files import open_regular

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
)
#: Formats Pillow cannot read (or reads only with a plugin) that art folders still hold: listed like images, so
#: each is reported with its format ("unsupported format HEIC (convert to JPEG/PNG)") instead of being ignored.
CONVERT_EXTENSIONS = (".heic", ".heif", ".avif", ".jxl", ".psd", ".svg", ".pdf")
LISTED_EXTENSIONS = IMAGE_EXTENSIONS + CONVERT_EXTENSIONS
REASONS = ("empty file", "unreadable", "not an image", "too large", "too small", "truncated", "corrupt", "unsupported")

DEFAULT_MAX_PIXELS = 50_000_000  # data.max_pixels' default, for callers outside a data module (inference)
_HEADER_BYTES = 256  # enough to tell an HTML page or a text file from binary image data
_EXIF_ORIENTATION = 0x0112


class BadImage(Exception):
    """A file that cannot serve as a training image: ``reason`` (one of REASONS) and a human-readable ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

    def __reduce__(self):  # survive the trip back from a pool worker with both fields
        return type(self), (self.reason, self.detail)


#: ISO-BMFF brands (bytes 8..12 after "ftyp") of the HEIF family, by the name a user knows.
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def sniff_format(head: bytes) -> str | None:
    """The name of a known image format that Pillow does not read here, from a file's first bytes, else None."""
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], f"ISO media ({head[8:12].decode('ascii', 'replace').strip()})")
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    if head.startswith(b"8BPS"):
        return "PSD (Photoshop)"
    if head.startswith(b"%PDF"):
        return "PDF"
    if b"<svg" in head[:256].lower():
        return "SVG"
    return None


def _describe_non_image(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<!--", b"<head", b"<?xml")):
        return "an HTML page (e.g. a saved download error), not image data"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "a text file saved with an image extension"
    return f"not a format Pillow can read (first bytes {head[:8].hex(' ')})"


@contextlib.contextmanager
def open_image(path: str | Path, max_pixels: int, min_size: int) -> Iterator[Image.Image]:
    """Open ``path`` and check its header only: no pixel is decoded, so a decompression bomb costs nothing.

    Yields the lazily-decoding PIL image, or raises :class:`BadImage` (empty, unreadable, not an image,
    more than ``max_pixels`` pixels, shorter side below ``min_size``).
    """
    try:
        if os.stat(path).st_size == 0:
            raise BadImage("empty file", "0 bytes")
        handle = open_regular(path)
    except OSError as exc:  # permissions, a dangling link, a file removed after listing
        raise BadImage("unreadable", exc.strerror or str(exc)) from None
    with handle:
        try:
            with warnings.catch_warnings():
                # Header and metadata warnings (odd TIFF tags, PIL's own bomb warning) do not affect the pixels;
                # the size limit below is ours (data.max_pixels) and is checked before anything is decoded.
                warnings.simplefilter("ignore")
                img = Image.open(handle)
        except UnidentifiedImageError:
            handle.seek(0)
            head = handle.read(_HEADER_BYTES)
            known = sniff_format(head)
            if known:
                raise BadImage("unsupported", f"unsupported format {known} (convert to JPEG/PNG)") from None
            raise BadImage("not an image", _describe_non_image(head)) from None
        except Image.DecompressionBombError as exc:
            raise BadImage("too large", str(exc)) from None
        except Exception as exc:  # a decoder for untrusted files: any failure is a property of the file
            raise BadImage("corrupt", f"{type(exc).__name__}: {exc}") from None
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise BadImage("too large", f"{width}x{height} px is more than data.max_pixels={max_pixels}")
            if min(width, height) < min_size:
                raise BadImage("too small", f"{width}x{height} px, shorter side below data.min_size={min_size}")
            yield img


#: What a complete file of a format ends with (trailing padding aside): a truncated download lacks it.
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _ends_complete(img: Image.Image) -> bool:
    """Whether the file ``img`` was opened from (not decoded yet) has its format's end marker in its last KB."""
    marker = _END_MARKERS.get(img.format or "")
    if marker is None:
        return True
    img.fp.seek(max(0, os.fstat(img.fp.fileno()).st_size - 1024))
    return marker in img.fp.read()


def check_header(path: str | Path, max_pixels: int, min_size: int) -> None:
    """Raise :class:`BadImage` if ``path`` is refused from its header (a few KB read) or its last KB: a JPEG or PNG
    without its end marker (a truncated download) is decoded in full to confirm, so it is found before training."""
    with open_image(path, max_pixels, min_size) as img:
        complete = _ends_complete(img)  # through the same open file: one open per file at start-up
    if not complete:
        load_rgb(path, 64, max_pixels, min_size)  # raises BadImage("truncated", ...) unless the data is whole


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos are stored sideways). Broken EXIF keeps the stored orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            return ImageOps.exif_transpose(img) if orientation in range(2, 9) else img
    except Exception:  # metadata only: the pixels are fine, use them as stored
        return img


def _rgb_or_rgba(img: Image.Image) -> Image.Image:
    """Bring any Pillow mode to RGB, or RGBA when the image has transparency (flattened after resizing)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey: Pillow's convert("L") clips at 255 (a white image); scale 0..65535 to 0..255 instead.
        grey = np.clip(np.asarray(img, dtype=np.float32) / 257.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        raise BadImage("unsupported", "32-bit float pixels have no defined range")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return img.convert("RGBA")
    # L, 1, P, CMYK (Adobe-inverted handled by Pillow), YCbCr -> RGB; convert() would copy even an RGB image
    return img if img.mode == "RGB" else img.convert("RGB")


def _on_white(img: Image.Image) -> Image.Image:
    """Composite transparent pixels on white: art scans with alpha are shapes on a page."""
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, img).convert("RGB")


def rgb_array(img: Image.Image, size: int | None) -> np.ndarray:
    """A decoded image as :func:`load_rgb` returns it: upright, RGB (transparency on white), resized to ``size`` x
    ``size`` unless ``size`` is None: HWC uint8. Also what an in-memory PIL image goes through (load_pretrained)."""
    pixels = _rgb_or_rgba(_upright(img))
    # reducing_gap: integer-factor box reduction first, then bilinear; antialiased like torchvision's Resize.
    if size is not None:
        pixels = pixels.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if pixels.mode == "RGBA":
        pixels = _on_white(pixels)
    return np.array(pixels, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one


def load_rgb(
    path: str | Path, size: int | None, max_pixels: int = DEFAULT_MAX_PIXELS, min_size: int = 1
) -> np.ndarray:
    """Decode ``path`` and resize it to ``size`` x ``size`` (aspect squashed, as the article does): HWC uint8.

    ``size=None`` keeps the native resolution (full-resolution inference).

    Raises :class:`BadImage` for every file that cannot be used; nothing else escapes.
    """
    with open_image(path, max_pixels, min_size) as img:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a warning while decoding pixels means damaged data: refuse
                # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale when that still covers `size`: far less work.
                if size is not None:
                    img.draft("RGB", (size, size))
                img.load()
            return rgb_array(img, size)
        except BadImage:
            raise
        except OSError as exc:
            reason = "truncated" if "truncated" in str(exc) else "corrupt"
            raise BadImage(reason, f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a decoder for untrusted files: any failure is a property of the file
            raise BadImage("corrupt", f"{type(exc).__name__}: {exc}") from None
