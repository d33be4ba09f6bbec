"""``data.cache: true``: every image decoded and resized once into a uint8 array on disk, memory-mapped by the loaders.

A GPU step on this model is far shorter than a JPEG decode, so 150 epochs of decoding would leave the GPU waiting.
The store is ``<cache_dir>/pixels/<slot>-<content>.npy`` (N x 3 x size x size uint8, row i = file i; rows of bad
files stay black and are never served) plus a ``.json`` that lists the bad files and marks the store complete.
``content`` hashes every path, size and mtime with the decode settings, so any change to the folder builds a new
store; ``slot`` hashes the roots and settings only, so the new store replaces the stale one of the same slot.
The build runs in a process pool; locking, atomic writes, the check of a store on opening (header and manifest exactly
as built, else logged once and rebuilt; this module declares the manifest's form) and the removal of stale stores
(never under a live reader) are art_diffusion.data.row_store's, shared with the target-feature store.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from art_diffusion.data import row_store
from art_diffusion.data.images import REASONS, BadImage, load_rgb
from art_diffusion.data.listing import SourceFile
from art_diffusion.data.pool import parallel_map

_VERSION = 2  # bump when load_rgb changes the pixels it produces or the layout changes
_HASH_CHUNK = 10_000  # files per json chunk of the cache key


@dataclass(frozen=True)
class PixelStore:
    """A complete store: ``pixels`` rows line up with the files it was built from; ``bad``: row -> (reason, detail)."""

    path: Path
    bad: dict[int, tuple[str, str]]
    built_s: float | None  # seconds this process spent building it; None when an existing store was reused

    def open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def store_path(cache_dir: Path, roots: list[str], files: list[SourceFile], size: int, max_pixels: int,
               min_size: int) -> Path:
    settings = [_VERSION, size, max_pixels, min_size]
    slot = row_store.digest([sorted(os.path.abspath(r) for r in roots), settings])
    content = hashlib.sha256(json.dumps(settings).encode())
    for start in range(0, len(files), _HASH_CHUNK):  # json's C encoder is fast; chunks keep the strings small
        content.update(json.dumps(files[start:start + _HASH_CHUNK]).encode())
    return cache_dir / "pixels" / f"{slot}-{content.hexdigest()[:20]}.npy"


def _decode(job: tuple[str, int, int, int]) -> tuple[bytes | None, tuple[str, str] | None]:
    path, size, max_pixels, min_size = job
    try:
        # stored channels-first, as the model takes it: a batch is then one contiguous copy, no permute
        return load_rgb(path, size, max_pixels, min_size).transpose(2, 0, 1).tobytes(), None
    except BadImage as exc:
        return None, (exc.reason, exc.detail)


def store_bytes(num_files: int, size: int) -> int:
    return num_files * 3 * size * size


def fits(directory: Path, num_files: int, size: int) -> tuple[bool, str]:
    """``data.cache=auto``: build a store only when it would take at most half of the disk's free space."""
    return row_store.fits(directory, store_bytes(num_files, size), f"{num_files} images at {size} px")


def open_or_build(path: Path, files: list[SourceFile], size: int, max_pixels: int, min_size: int,
                  workers: int) -> PixelStore:
    """The complete store at ``path``, built first if needed (once, whoever else asks at the same time); this
    process is registered as its reader until it exits."""

    def fill(write: row_store.Writer) -> dict:
        bad, black = {}, np.zeros((1, 3, size, size), np.uint8)  # a bad file's row stays black, never served
        jobs = [(f.path, size, max_pixels, min_size) for f in files]
        for row, (data, verdict) in enumerate(parallel_map(_decode, jobs, workers, f"Building the pixel cache {path}")):
            if data is None:
                bad[row] = verdict
            write(black if data is None else np.frombuffer(data, np.uint8).reshape(1, 3, size, size))
        return {"files": [f.path for f in files], "image_size": size, "bad": bad}

    def check(manifest: dict) -> str | None:  # what fill writes for these files: a bad row is a row, its verdict a pair
        why = row_store.mismatch(manifest, {"files": [f.path for f in files], "image_size": size, "bad": dict})
        if why is not None:
            return why
        for row, verdict in manifest["bad"].items():
            if not (row.isascii() and row.isdigit() and str(int(row)) == row and int(row) < len(files)):
                return f"its manifest names a bad row {row[:20]!r} that the store does not have"
            if not (isinstance(verdict, list) and len(verdict) == 2 and verdict[0] in REASONS
                    and isinstance(verdict[1], str)):
                return f"its manifest's verdict on row {row} is not a (reason, detail) pair"
        return None

    manifest, built_s = row_store.open_or_build(
        path, (len(files), 3, size, size), np.uint8, fill, check, "pixel cache",
        "Point data.cache_dir at a larger disk, lower data.image_size, or train with data.cache=false.")
    bad = {int(row): tuple(verdict) for row, verdict in manifest["bad"].items()}
    return PixelStore(path, bad, built_s)
