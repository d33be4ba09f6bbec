"""Writing the demo dataset once: ``write_demo_dataset(root)`` builds ``root/<class>/<class>_0000.jpg`` ...

* Written once: a marker ``root/.complete`` holding the parameters as JSON is part of the finished dataset.
  If it matches, the call returns immediately without touching anything.
* A full disk is one :class:`~art_diffusion.storage.DiskFullError` naming the disk of ``root`` and its free space,
  and nothing of the partial dataset is left.
* Crash / concurrency safe: the dataset is built in a temporary directory beside ``root`` (marker written last,
  atomically) and moved into place with a single ``os.rename``; callers (e.g. DDP ranks) are serialised with
  :func:`art_diffusion.storage.file_lock` on a lock file beside ``root``. The folders a killed writer left
  (``.<root>.tmp-*``, ``.<root>.old-*``) are removed by the next call, under that lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import filelock

from art_diffusion import DataError, storage
from art_diffusion.data.demo.painters import (
    DEMO_CLASSES,
    DEMO_VERSION,
    render_demo_image,
)
from art_diffusion.data.pool import cores, parallel_map

log = logging.getLogger(__name__)

_MARKER = ".complete"
_JPEG_QUALITY = 92


def _params(images_per_class: int, image_size: int, seed: int) -> dict:
    return {"images_per_class": images_per_class, "image_size": image_size, "seed": seed,
            "version": DEMO_VERSION, "classes": list(DEMO_CLASSES)}


def _is_complete(root: Path, params: dict) -> bool:
    try:
        return storage.read_json(root / _MARKER) == params
    except (OSError, ValueError):
        return False


def _looks_like_demo(root: Path) -> bool:
    """True if ``root`` only holds demo-dataset entries, so it is safe to replace."""
    allowed = set(DEMO_CLASSES) | {_MARKER}
    try:
        return all(p.name in allowed for p in root.iterdir())
    except NotADirectoryError:
        return False


def _write_image(job: tuple[str, int, int, int, Path]) -> storage.DiskFullError | None:
    """Paints one image; a full disk is returned, not raised: a pool torn down by a worker's exception can hang
    (CPython's ``Pool.terminate`` waits on a queue lock a killed worker held), so every worker ends its jobs."""
    name, i, size, seed, path = job
    try:
        with storage.atomic_path(path) as tmp:
            render_demo_image(name, i, size, seed).save(tmp, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)
    except storage.DiskFullError as exc:
        return exc
    return None


def _write_dataset(dst: Path, params: dict) -> None:
    """Every image, painted on every core (each image depends only on its class, index and seed)."""
    n, size, seed = params["images_per_class"], params["image_size"], params["seed"]
    jobs = []
    for name in DEMO_CLASSES:
        (dst / name).mkdir()
        jobs += [(name, i, size, seed, dst / name / f"{name}_{i:04d}.jpg") for i in range(n)]
    full = [error for error in parallel_map(_write_image, jobs, cores(), f"Painting the demo images in {dst}") if error]
    if full:
        raise full[0]
    storage.atomic_write(dst / _MARKER, json.dumps(params, sort_keys=True))  # marker last


def write_demo_dataset(root, images_per_class: int = 48, image_size: int = 128, seed: int = 0) -> Path:
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
        _sweep_complete(root)
        return root

    parent = root.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with storage.file_lock(parent / f".{root.name}.lock"):
            if _is_complete(root, params):  # another process finished while we waited
                return root
            if root.exists() and not _looks_like_demo(root):
                raise DataError(f"data.root={str(root)!r} exists and is not a demo dataset; refusing to replace it. "
                                "With data=demo (experiment=demo), point data.root at a new folder, or use data=art "
                                "for your own images.")
            _remove_leftovers(root)
            # a name of our own and a plain mkdir (not mkdtemp's 0700): the dataset is readable by whoever may read
            # its parent, like any folder the user makes
            tmp = parent / storage.temporary_name(f".{root.name}.tmp")
            tmp.mkdir()
            try:
                _write_dataset(tmp, params)
                if root.exists():  # stale / partial / other parameters: move aside, then swap
                    old = parent / storage.temporary_name(f".{root.name}.old")
                    old.mkdir()
                    os.rename(root, old / "data")
                    shutil.rmtree(old, ignore_errors=True)
                os.rename(tmp, root)
            except Exception as exc:  # a full disk in any painting worker: one message about root's disk, no partial
                if not storage.is_disk_full(exc, tmp):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # first: the message reports the space it took back
                raise storage.disk_full_error(root, exc) from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except PermissionError as exc:
        raise DataError(f"Cannot write the demo dataset at {root} ({exc.strerror}: {exc.filename}): point "
                        "paths.data_dir (or data.root) at a folder you can write.") from None
    return root


def _leftovers(root: Path) -> list[Path]:
    """Temporary folders of a writer that was killed (``kill -9`` while painting) beside ``root``."""
    parent = root.absolute().parent
    return sorted(p for pattern in (f".{root.name}.tmp-*", f".{root.name}.old-*") for p in parent.glob(pattern)
                  if p.is_dir())


def _remove_leftovers(root: Path) -> None:
    """Remove them: every writer holds the lock while its folders exist, so under the lock all are dead ones'."""
    for leftover in _leftovers(root):
        log.info("Removing %s, left by a demo-dataset writer that was killed", leftover)
        for _ in range(20):  # its painting workers die with it, yet one may finish a file while the tree goes
            shutil.rmtree(leftover, ignore_errors=True)
            if not leftover.exists():
                break
            time.sleep(0.05)


def _sweep_complete(root: Path) -> None:
    """A complete dataset beside a killed writer's folders (killed while a second writer waited): removed when the
    lock is free, without waiting for it."""
    if not _leftovers(root):
        return
    with contextlib.suppress(filelock.Timeout, OSError), \
            storage.file_lock(root.absolute().parent / f".{root.name}.lock", timeout=0):
        _remove_leftovers(root)
