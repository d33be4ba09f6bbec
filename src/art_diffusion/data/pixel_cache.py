"""``data.cache: true``: every image decoded and resized once into a uint8 array on disk, memory-mapped by the loaders.

A GPU step on this model is far shorter than a JPEG decode, so 150 epochs of decoding would leave the GPU waiting.
The store is ``<cache_dir>/pixels/<slot>-<content>.npy`` (N x 3 x size x size uint8, row i = file i; rows of bad
files stay black and are never served) plus a ``.json`` that lists the bad files and marks the store complete.
``content`` hashes every path, size and mtime with the decode settings, so any change to the folder builds a new
store; ``slot`` hashes the roots and settings only, so the new store replaces the stale one of the same slot.
The build runs in a process pool, under the slot's file lock (DDP ranks and concurrent runs wait for one builder)
and writes to temporary names renamed into place, so a killed build never looks complete.

A store in use is never deleted under its reader: every process that opens one registers in ``<store>.readers/``
(a lock it holds until it exits, see art_diffusion.storage.locks), and a stale store is removed only once no live
process is registered; until then it is kept, and the next run that opens this slot tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from art_diffusion.data.images import BadImage, load_rgb
from art_diffusion.data.listing import SourceFile
from art_diffusion.data.pool import parallel_map
from art_diffusion.storage import (
    DiskFullError,
    atomic_path,
    atomic_write,
    file_lock,
    megabytes,
    reserve,
    stale_temporaries,
)
from art_diffusion.storage.locks import in_use, register, registration_path

log = logging.getLogger(__name__)

_VERSION = 2  # bump when load_rgb changes the pixels it produces or the layout changes
_HASH_CHUNK = 10_000  # files per json chunk of the cache key
_DISK_MARGIN = 1.1  # refuse to start a build that would fill the disk


@dataclass(frozen=True)
class PixelStore:
    """A complete store: ``pixels`` rows line up with the files it was built from; ``bad``: row -> (reason, detail)."""

    path: Path
    bad: dict[int, tuple[str, str]]
    built_s: float | None  # seconds this process spent building it; None when an existing store was reused

    def open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:20]


def store_path(cache_dir: Path, roots: list[str], files: list[SourceFile], size: int, max_pixels: int,
               min_size: int) -> Path:
    settings = [_VERSION, size, max_pixels, min_size]
    slot = _digest([sorted(os.path.abspath(r) for r in roots), settings])
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


def _read_manifest(path: Path) -> dict[int, tuple[str, str]] | None:
    try:
        manifest = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return {int(row): tuple(verdict) for row, verdict in manifest["bad"].items()}


def store_bytes(num_files: int, size: int) -> int:
    return num_files * 3 * size * size


def fits(directory: Path, num_files: int, size: int) -> tuple[bool, str]:
    """``data.cache=auto``: build a store only when it would take at most half of the disk's free space."""
    existing = next(p for p in (directory, *directory.parents) if p.exists())  # the cache dir may not exist yet
    needed, free = store_bytes(num_files, size), shutil.disk_usage(existing).free
    verdict = f"{megabytes(needed)} for {num_files} images at {size} px, {megabytes(free)} free in {directory}"
    return needed <= free / 2, verdict


def _check_disk(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path.parent).free
    if needed * _DISK_MARGIN > free:
        raise DiskFullError(
            f"The pixel cache {path.name} needs {megabytes(needed)} (+10% margin) but {path.parent} has "
            f"{megabytes(free)} free. Point data.cache_dir at a larger disk, lower data.image_size, or train with "
            "data.cache=false."
        )


def _build(path: Path, files: list[SourceFile], size: int, max_pixels: int, min_size: int, workers: int) -> None:
    """Rows written with plain writes (no memory map: a disk that fills up under a mapped file kills the process
    with SIGBUS) into a file whose space is reserved first, so a full disk stops the build at once, in one
    message, and the temporary file is removed."""
    for leftover in stale_temporaries(path):  # from a killed builder (we hold the lock)
        leftover.unlink(missing_ok=True)
    shape = (len(files), 3, size, size)
    _check_disk(path, store_bytes(len(files), size))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(fh, header)
        reserve(fh, fh.tell() + store_bytes(len(files), size), path)
        black = bytes(3 * size * size)
        bad = {}
        jobs = [(f.path, size, max_pixels, min_size) for f in files]
        for row, (data, verdict) in enumerate(parallel_map(_decode, jobs, workers, f"Building the pixel cache {path}")):
            if data is None:
                bad[row] = verdict
            fh.write(black if data is None else data)
    manifest = {"files": [f.path for f in files], "image_size": size, "bad": bad}
    atomic_write(path.with_suffix(".json"), json.dumps(manifest))  # last: its presence marks the store complete


def _readers(store: Path) -> Path:
    return store.with_name(store.stem + ".readers")


def _remove_unused_stale(path: Path) -> None:
    """Stores of the same slot built from an older state of the folder, unless a live process still reads them."""
    slot = path.stem.split("-")[0]
    stems = {old.name.split(".")[0] for old in path.parent.glob(f"{slot}-*")} - {path.stem}
    for stem in sorted(stems):
        if in_use(path.parent / f"{stem}.readers"):
            log.info("Keeping the stale pixel store %s: a running job reads it (a later run removes it)", stem)
            continue
        for old in path.parent.glob(f"{stem}.*"):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def open_or_build(path: Path, files: list[SourceFile], size: int, max_pixels: int, min_size: int,
                  workers: int) -> PixelStore:
    """The complete store at ``path``, built first if needed (once, whoever else asks at the same time); this
    process is registered as its reader until it exits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f"{path.stem.split('-')[0]}.lock"):  # the slot: builds, readers and removals
        bad, built_s = _read_manifest(path), None
        if bad is None or not path.exists():
            start = time.perf_counter()
            _build(path, files, size, max_pixels, min_size, workers)
            built_s = time.perf_counter() - start
            log.info("Built the pixel cache %s (%d images) in %.1f s on host %s", path, len(files), built_s,
                     socket.gethostname())  # by whichever rank or job got here first: the others reuse it
            bad = _read_manifest(path) or {}
        in_use(_readers(path))  # forgets the registrations of readers that have exited
        register(registration_path(_readers(path)))
        _remove_unused_stale(path)
    return PixelStore(path, bad, built_s)
