"""Files: the per-user cache directory and the one atomic write (of bytes, text, strict JSON).

Caches (VGG weights, header checks, pixel stores, the demo data) are shared by DDP ranks and concurrent runs, so
every writer takes :func:`art_diffusion.storage.locks.file_lock` and every file appears through
:func:`atomic_path`: written under a temporary name in its destination directory, fsynced, then renamed over the
final name. A reader sees the old file or the complete new one, never a torn one, even when the writer is killed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from art_diffusion import UserError

CACHE_ENV = "ART_DIFFUSION_CACHE"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(UserError):
    """A write ran out of disk space (or quota); nothing was written under the final name."""


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


def _free_space(directory: Path) -> str:
    try:
        return f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB free"
    except OSError:
        return "free space unknown"


def _disk_full(path: Path, exc: OSError) -> DiskFullError:
    return DiskFullError(
        f"No space left on the disk of {path.parent} ({_free_space(path.parent)}, {exc.strerror}) while writing "
        f"{path.name}; nothing was written under that name and the previous {path.name}, if any, is intact. Free "
        "space on that disk (old runs, checkpoints, caches) or move the run/cache to a larger one, then run again "
        "(a training run continues with `python scripts/train.py resume=<run dir>`)."
    )


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

    If the block raises, the temporary file is removed and ``path`` is untouched; a full disk (``ENOSPC``/``EDQUOT``)
    becomes one :class:`DiskFullError` naming the directory and its free space. Not ``mkstemp``: its 0600 mode
    would hide a shared cache from other users. The temporary file is in the destination directory, so the rename
    never crosses file systems (a copy could be killed half-way under the final name).
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
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            tmp.unlink(missing_ok=True)  # first: the message reports the space this file took back
            raise _disk_full(path, exc) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically: see :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


#: Characters a name from data may not bring into a file name: separators, NUL and other control characters, and
#: ``%`` itself (the escape). Each becomes ``%XX``.
_UNSAFE = frozenset({"/", "\\", "%", ":"} | {chr(c) for c in range(32)} | {chr(127)})
_MAX_NAME_BYTES = 200  # file systems allow 255; room for a prefix, a suffix and a temporary extension


def safe_name(name: str) -> str:
    """``name`` (a class folder's name, an input's stem: text that came from data or a file) as one harmless file
    name component: separators, control characters, ``%`` and a leading ``.`` are percent-encoded (so ``..``, ``a/b``
    and ``/etc`` stay inside the folder they are joined to, and two different names never give the same file); an
    empty name is ``%00``; a very long one is cut and ends with a hash of the whole. The real name stays in logs,
    tags and results; this is only where a file goes."""
    encoded = "".join(f"%{ord(c):02X}" if c in _UNSAFE else c for c in str(name))
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    encoded = encoded or "%00"
    if len(encoded.encode()) > _MAX_NAME_BYTES:
        digest = hashlib.sha256(encoded.encode()).hexdigest()[:16]
        encoded = encoded.encode()[:_MAX_NAME_BYTES - 17].decode(errors="ignore") + "~" + digest
    return encoded


def inside(root: str | Path, *names: str) -> Path:
    """``root`` joined with ``names`` (each through :func:`safe_name`): the one way a path is built from names that
    came from data or a file. The result is always a descendant of ``root``."""
    path = Path(root).joinpath(*(safe_name(name) for name in names))
    if os.path.commonpath([os.path.abspath(root), os.path.abspath(path)]) != os.path.abspath(root):
        raise AssertionError(f"{path} escapes {root}")  # a bug: safe_name makes this impossible
    return path


def _finite(node):
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {key: _finite(value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [_finite(value) for value in node]
    return node


def json_text(data, indent: int | None = 2) -> str:
    """``data`` as JSON (a line per item, or one line with ``indent=None``), every NaN or inf as ``null``: strict
    JSON that every parser reads (Python's default would write a bare ``NaN``)."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | Path, data) -> None:
    """:func:`json_text` of ``data``, written atomically to ``path``: every JSON file a run or tool writes."""
    atomic_write(path, json_text(data))


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files :func:`atomic_path` left beside ``path`` by a killed writer (remove them under a lock)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.name}.*.tmp"))
