"""Stores of rows lined up with a file listing, built once and memory-mapped: the pixel cache and the target-feature
store share this one mechanism.

A store is ``<dir>/<slot>-<content>.npy`` (row i = file i) plus a ``.json`` manifest written last, so its presence
marks the store complete. ``content`` hashes everything the rows depend on, so any change builds a new store;
``slot`` hashes the settings that name "the same store", so the new store replaces the stale one of its slot. A
build runs under the slot's file lock (DDP ranks and concurrent runs wait for one builder) and writes to temporary
names renamed into place, so a killed build never looks complete. Rows are written with plain writes into a file
whose space is reserved first (never through a memory map: a disk that fills up under a mapped file kills the
process with SIGBUS), so a full disk stops a build at once, in one message, leaving no partial file. Opening checks
the array against the manifest (shape, dtype, a readable header, the file's full length): a truncated or damaged
store is logged and rebuilt.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from art_diffusion.storage import (
    DiskFullError,
    atomic_path,
    atomic_write,
    file_lock,
    megabytes,
    reserve,
    stale_temporaries,
    unwritable,
)
from art_diffusion.storage.locks import in_use, register, registration_path

log = logging.getLogger(__name__)

_DISK_MARGIN = 1.1  # refuse to start a build that would fill the disk


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:20]


def fits(directory: Path, needed: int, what: str) -> tuple[bool, str]:
    """``auto`` stores: build one only when it would take at most half of the disk's free space."""
    existing = next(p for p in (directory, *directory.parents) if p.exists())  # the cache dir may not exist yet
    free = shutil.disk_usage(existing).free
    return needed <= free / 2, f"{megabytes(needed)} for {what}, {megabytes(free)} free in {directory}"


def check_disk(path: Path, needed: int, name: str, fix: str) -> None:
    free = shutil.disk_usage(path.parent).free
    if needed * _DISK_MARGIN > free:
        raise DiskFullError(f"The {name} {path.name} needs {megabytes(needed)} (+10% margin) but {path.parent} has "
                            f"{megabytes(free)} free. {fix}")


def read_manifest(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> dict | None:
    """The manifest of a complete, intact store at ``path``, else None (missing, or damaged: logged)."""
    try:
        manifest = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    try:
        rows = np.load(path, mmap_mode="r")  # reads the header; a short file fails to map
        intact = rows.shape == tuple(shape) and rows.dtype == np.dtype(dtype) and isinstance(manifest, dict)
        del rows
    except (OSError, ValueError, EOFError) as exc:
        intact, why = False, f"{type(exc).__name__}: {exc}"
    else:
        why = f"expected shape {tuple(shape)} {np.dtype(dtype)}"
    if not intact:
        log.warning("The store %s is damaged or truncated (%s): rebuilding it", path, why)
        return None
    return manifest


def _readers(store: Path) -> Path:
    return store.with_name(store.stem + ".readers")


def _slot_lock(store: Path) -> Path:
    return store.parent / f"{store.stem.split('-')[0]}.lock"


def unusable(path: Path) -> str | None:
    """Why this process cannot open the store at ``path`` (None when it can): even to read it, :func:`open_or_build`
    takes the slot's lock and adds a registration to the store's readers folder, so those and the store's folder
    must be writable, not just the cache dir above them (a shared cache whose folders another user made)."""
    why = unwritable(path.parent)
    if why:
        return f"{path.parent}: {why}"
    for needed, mode in ((_slot_lock(path), os.R_OK | os.W_OK), (_readers(path), os.W_OK | os.X_OK)):
        if needed.exists() and not os.access(needed, mode):
            return f"{needed} is not writable by this user (another user's)"
    return None


def _remove_unused_stale(path: Path, name: str) -> None:
    """Stores of the same slot built from an older state, unless a live process still reads them."""
    slot = path.stem.split("-")[0]
    stems = {old.name.split(".")[0] for old in path.parent.glob(f"{slot}-*")} - {path.stem}
    for stem in sorted(stems):
        if in_use(path.parent / f"{stem}.readers"):
            log.info("Keeping the stale %s %s: a running job reads it (a later run removes it)", name, stem)
            continue
        for old in path.parent.glob(f"{stem}.*"):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


Writer = Callable[[np.ndarray], None]


def _build(path: Path, shape: tuple[int, ...], dtype: np.dtype, fill: Callable[[Writer], dict]) -> None:
    """``fill(write)`` hands the rows to ``write`` in order, in blocks of whole rows, and returns the manifest."""
    for leftover in stale_temporaries(path) + stale_temporaries(path.with_suffix(".json")):  # a killed builder's
        leftover.unlink(missing_ok=True)  # (we hold the lock)
    dtype, row_shape = np.dtype(dtype), tuple(shape[1:])
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
        reserve(fh, fh.tell() + int(np.prod(shape)) * dtype.itemsize, path)

        def write(block: np.ndarray) -> None:
            nonlocal written
            if block.dtype != dtype or tuple(block.shape[1:]) != row_shape or written + len(block) > shape[0]:
                raise ValueError(f"rows {block.dtype} {block.shape} do not fit the store {dtype} {shape} "
                                 f"after {written} rows")
            fh.write(np.ascontiguousarray(block).data)  # the rows' own buffer, no copy
            written += len(block)

        extra = fill(write)
        if written != shape[0]:
            raise ValueError(f"the store {path} got {written} of its {shape[0]} rows")
    atomic_write(path.with_suffix(".json"), json.dumps(extra))  # last: its presence marks the store complete


def open_or_build(path: Path, shape: tuple[int, ...], dtype, fill: Callable[[Writer], dict], name: str,
                  fix: str) -> tuple[dict, float | None]:
    """``(manifest, seconds spent building or None when reused)`` of the complete store at ``path``, built first by
    ``fill(write) -> manifest`` if missing, stale or damaged (once, whoever else asks at the same time); this process
    is registered as its reader until it exits. ``name`` and ``fix`` word the out-of-disk error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(_slot_lock(path)):  # the slot: builds, readers and removals
        manifest, built_s = read_manifest(path, shape, dtype), None
        if manifest is None:
            check_disk(path, int(np.prod(shape)) * np.dtype(dtype).itemsize, name, fix)
            start = time.perf_counter()
            _build(path, shape, dtype, fill)
            built_s = time.perf_counter() - start
            log.info("Built the %s %s (%d rows) in %.1f s on host %s", name, path, shape[0], built_s,
                     socket.gethostname())  # by whichever rank or job got here first: the others reuse it
            manifest = read_manifest(path, shape, dtype)
            if manifest is None:
                raise OSError(f"The {name} {path} was built but does not read back; is its disk failing?")
        in_use(_readers(path))  # forgets the registrations of readers that have exited
        register(registration_path(_readers(path)))
        _remove_unused_stale(path, name)
    return manifest, built_s
