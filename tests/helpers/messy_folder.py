"""A small ImageFolder with every kind of file a scraped art dataset ships, generated in the test (no external files).

``make_messy_folder(root)`` returns ``(good, bad)``: the names of usable images, and ``{name: reason}`` for the
files that must be skipped. Only ``corrupt_scan.jpg`` passes the start-up check (LAZY_BAD): it is found when its
pixels are decoded (``truncated.jpg`` lacks the JPEG end marker, so the header check decodes it and finds it).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

LAZY_BAD = {"corrupt_scan.jpg"}


def pattern(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth RGB image (compresses like a photo, unlike noise)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    a, b = rng.integers(1, 5, 2)
    arr = np.stack([(x * a) % 256, (y * b) % 256, ((x + y) * 3) % 256], -1).astype(np.uint8)
    return Image.fromarray(arr)


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 65000, payload: int = 25_000) -> bytes:
    """A valid PNG header claiming side x side grey pixels, with a small compressed payload: a decompression bomb."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * payload * 1000, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def corrupt_scan_jpeg(img: Image.Image) -> bytes:
    """Valid headers, random bytes in the middle of the entropy-coded scan data."""
    data = bytearray(jpeg_bytes(img))
    start = data.index(b"\xff\xda") + 40
    data[start:start + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return bytes(data)


def make_messy_folder(root: Path, good_per_class: int = 4) -> tuple[set[str], dict[str, str]]:
    drawings, painting, sculpture = root / "drawings", root / "painting", root / "sculpture"
    for folder in (drawings, painting, sculpture, root / "empty_class"):
        folder.mkdir(parents=True)
    good: set[str] = set()

    def save(path: Path, img: Image.Image, **kwargs) -> None:
        img.save(path, **kwargs)
        good.add(path.name)

    for i in range(good_per_class):
        save(drawings / f"good_{i}.jpg", pattern(64, 48, i))
        save(sculpture / f"statue_{i}.jpg", pattern(48, 64, 10 + i))
    # usable, but unusual: extensions, modes, orientation, size
    save(drawings / "UPPER.JPG", pattern(40, 40, 1))
    save(drawings / "photo.jpeg", pattern(40, 40, 2))
    save(painting / "lossless.webp", pattern(40, 40, 3))
    save(painting / "scan.tif", pattern(40, 40, 4))
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)  # right half fully transparent (black underneath)
    save(painting / "rgba.png", Image.fromarray(rgba, "RGBA"))
    save(painting / "grey_alpha.png", Image.fromarray(rgba[..., [0, 3]], "LA"))
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    save(painting / "palette.png", palette, transparency=palette.getpixel((39, 0)))
    save(painting / "grey.jpg", pattern(40, 40, 5).convert("L"))
    save(painting / "grey16.png", Image.fromarray(np.full((40, 40), 32896, np.uint16)))  # 32896 / 257 = 128
    save(painting / "cmyk.jpg", Image.new("CMYK", (40, 40), (0, 255, 255, 0)))  # pure red
    rotated = Image.fromarray(np.concatenate([np.full((40, 32, 3), (255, 0, 0), np.uint8),
                                              np.full((40, 32, 3), (0, 0, 255), np.uint8)], axis=1))
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored sideways: displayed rotated 90 degrees clockwise, left half on top
    save(painting / "exif_rotated.jpg", rotated, exif=exif.tobytes())
    save(painting / "very_large.jpg", pattern(3000, 2000, 6))

    bad = {
        "truncated.jpg": "truncated",
        "empty.jpg": "empty file",
        "error_page.jpg": "not an image",
        "notes_saved_as.jpg": "not an image",
        "corrupt_scan.jpg": "corrupt",
        "bomb.png": "too large",
        "one_pixel.png": "too small",
        "thin_strip.png": "too small",
        "dangling_link.jpg": "unreadable",
    }
    whole = jpeg_bytes(pattern(200, 150, 7))
    (sculpture / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (sculpture / "empty.jpg").write_bytes(b"")
    (sculpture / "error_page.jpg").write_text("<!DOCTYPE html>\n<html><body>404 Not Found</body></html>")
    (sculpture / "notes_saved_as.jpg").write_text("title: a painting, artist: unknown\n")
    (sculpture / "corrupt_scan.jpg").write_bytes(corrupt_scan_jpeg(pattern(200, 150, 8)))
    (sculpture / "bomb.png").write_bytes(bomb_png())
    Image.new("RGB", (1, 1), "white").save(sculpture / "one_pixel.png")
    Image.new("RGB", (100, 16), "white").save(sculpture / "thin_strip.png")
    os.symlink(root / "gone.jpg", sculpture / "dangling_link.jpg")
    # not images at all: ignored (hidden or no image extension)
    (drawings / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (drawings / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (painting / "readme.txt").write_text("scraped 2019")
    (painting / "._rgba.png").write_bytes(b"\0\5\26\7")  # macOS AppleDouble companion
    return good, bad
