"""The project's one of each file mechanism: the per-user cache directory, an inter-process lock, an atomic write.

Caches (VGG weights, header checks, pixel stores, the demo data) are shared by DDP ranks and concurrent runs, so
every writer takes :func:`file_lock` and every file appears through :func:`atomic_path`: written under a temporary
name in its destination directory, fsynced, then renamed over the final name. A reader sees the old file or the
complete new one, never a torn one, even when the writer is killed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import filelock

CACHE_ENV = "ART_DIFFUSION_CACHE"


def cache_dir() -> Path:
    """``$ART_DIFFUSION_CACHE`` if set, else the per-user cache dir (``~/.cache/art-diffusion``); created on demand."""
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs  # only needed when the variable is absent

        path = Path(platformdirs.user_cache_dir("art-diffusion"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"Cannot create the art-diffusion cache directory {path} ({exc}). "
            f"Point {CACHE_ENV} at a writable directory."
        ) from exc
    return path


def file_lock(path: str | Path) -> filelock.FileLock:
    """An exclusive inter-process lock held on the file ``path`` (created if missing), for ``with`` blocks."""
    return filelock.FileLock(str(path))


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block succeeds it is fsynced and renamed to ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched. Not ``mkstemp``: its 0600 mode
    would hide a shared cache from other users.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically: see :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files :func:`atomic_path` left beside ``path`` by a killed writer (remove them under a lock)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.name}.*.tmp"))
