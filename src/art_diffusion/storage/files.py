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
import io
import json
import logging
import math
import os
import re
import shutil
import socket
import stat
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from art_diffusion import UserError

CACHE_ENV = "ART_DIFFUSION_CACHE"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
log = logging.getLogger(__name__)


class DiskFullError(UserError):
    """A write ran out of disk space (or quota); nothing was written under the final name. ``directory`` is where
    (None when unknown: an error unpickled from a worker process)."""

    def __init__(self, message: str, directory: str | Path | None = None):
        super().__init__(message)
        self.directory = None if directory is None else Path(directory)


#: What a library says when its write ran out of space, where it does not raise an ``OSError`` with the errno.
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")
#: torch's zip writer (``torch.save`` to a path) turns a failed ``write`` into a ``RuntimeError`` without the errno:
#: ``[enforce fail at inline_container.cc:...] . unexpected pos N vs M`` or ``PytorchStreamWriter failed writing``.
_TORCH_WRITE_FAILED = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")
_NEARLY_FULL = 1 << 20  # bytes: a torch write that failed with less than this free failed for want of space


def is_disk_full(error: BaseException | None, directory: str | Path | None = None) -> bool:
    """True when ``error`` (or an exception it was raised from) says a write ran out of disk space or quota: the one
    place every exception type that can carry it is recognised. An ``OSError`` with ``ENOSPC``/``EDQUOT`` (Python,
    PIL, numpy), a :class:`DiskFullError`, a message (or a failed subprocess's stderr) with the C library's text, or
    torch's writer failure (a ``RuntimeError`` without the errno) when ``directory`` is (nearly) full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return True
        text = f"{error} {getattr(error, 'stderr', None) or ''}"  # a subprocess's own words (a compiler's)
        if any(words in text for words in _NO_SPACE_TEXT):
            return True
        if isinstance(error, RuntimeError) and directory is not None and any(m in text for m in _TORCH_WRITE_FAILED):
            free = free_bytes(Path(directory))
            if free is not None and free < _NEARLY_FULL:
                return True
        error = error.__cause__ or error.__context__
    return False


def cache_root() -> Path:
    """``$ART_DIFFUSION_CACHE`` if set, else the per-user cache dir (``~/.cache/art-diffusion``); not created."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs  # only needed when the variable is absent

    return Path(platformdirs.user_cache_dir("art-diffusion"))


def cache_dir() -> Path:
    """:func:`cache_root`, created on demand; one :class:`CacheUnusableError` when it cannot be (read-only disk)."""
    path = cache_root()
    why = unwritable(path)
    if why:
        raise CacheUnusableError(f"Cannot use the art-diffusion cache directory {path} ({why}). Point {CACHE_ENV} "
                                 "at a writable directory.")
    return path


class CacheUnusableError(UserError, OSError):
    """A cache directory that must be written cannot be (read-only, not creatable); the message says where to."""


def unwritable(directory: Path) -> str | None:
    """None when ``directory`` exists (created if missing) and can take new files, else why not, in words."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    with contextlib.suppress(OSError, AttributeError):
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "read-only file system"
    if not os.access(directory, os.W_OK | os.X_OK):
        return "permission denied"
    return None


_WARNED: set[Path] = set()


def optional_cache_dir(directory: str | Path | None = None, what: str = "caches") -> Path | None:
    """``directory`` (default :func:`cache_root`) for a cache the work can do without, or None, after one warning
    per directory and process, when it cannot be written: the work then runs without that cache."""
    path = Path(directory).expanduser() if directory else cache_root()
    why = unwritable(path)
    if why is None:
        return path
    if path not in _WARNED and not _WARNED.intersection(path.parents):  # a folder under one warned about: said
        _WARNED.add(path)
        log.warning("The cache directory %s cannot be written (%s): running without %s (each run redoes that "
                    "work). Point %s (or data.cache_dir) at a writable directory to cache again.", path, why, what,
                    CACHE_ENV)
    return None


def megabytes(num_bytes: float) -> str:
    """Bytes as ``"12.3 MB"`` (decimal megabytes: what ``df -H`` shows), never rounded to a misleading 0.0."""
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e5 else f"{num_bytes / 1e6:.3f} MB"


def free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def reserve(fh, num_bytes: int, path: Path) -> None:
    """Allocate ``num_bytes`` for the open file ``fh`` (writing ``path``) before writing it, so a disk too small is
    one :class:`DiskFullError` with the numbers, before any work, and never a crash half-way (SIGBUS for a
    memory-mapped file). A file system without ``posix_fallocate`` is written without the reservation."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fh.fileno(), 0, num_bytes)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            fh.truncate(0)  # give back what the failed reservation took, so the free space reported is real
            raise disk_full_error(path, exc, needed=num_bytes) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def ensure_room(directory: Path, num_bytes: int, what: str) -> None:
    """One :class:`DiskFullError` naming ``directory`` and ``what`` unless ``num_bytes`` fit there now, for writers
    that are not ours (Hydra's record of a call): the space is taken by :func:`reserve` and given back at once."""
    probe = Path(directory) / f".free-space-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            reserve(fh, num_bytes, probe)
    except DiskFullError as exc:
        probe.unlink(missing_ok=True)  # first: the message reports the space it took back
        raise disk_full_error(directory, exc, what=what) from None
    finally:
        probe.unlink(missing_ok=True)


def _free_space(directory: Path) -> str:
    free = free_bytes(directory)
    return "free space unknown" if free is None else f"{megabytes(free)} free"


def _strerror(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return strerror
    return "Disk quota exceeded" if "quota" in str(exc).lower() else "No space left on device"


def disk_full_error(path: str | Path, exc: BaseException, needed: int | None = None,
                    what: str | None = None) -> DiskFullError:
    """The one message for a full disk while writing ``path`` (``exc`` as :func:`is_disk_full` recognised it): the
    directory, its free space now (call it after removing the partial file) and the way out. Never a traceback.
    With ``what``, ``path`` is the directory and ``what`` the file a library's own writer did not name."""
    path = Path(path)
    directory = path if what else path.parent
    size = f"{path.name} needs {megabytes(needed)}" if needed else f"while writing {what or path.name}"
    state = (f"; {_strerror(exc)})" if what else f" after removing the partial file; {_strerror(exc)}); nothing was "
             f"written under that name and the previous {path.name}, if any, is intact")
    return DiskFullError(
        f"No space left on the disk of {directory} ({size}, {_free_space(directory)}{state}. Free space on that "
        "disk (old runs, checkpoints, caches) or move the run/cache to a larger one, then run again (a training "
        "run continues with `python scripts/train.py resume=<run dir>`).",
        directory,
    )


@contextlib.contextmanager
def optional_write(what: str) -> Iterator[None]:
    """Around the write of a cache the work can do without (``what``: "the VGG16 weight cache (...)"): a full or
    unwritable disk there is one warning per directory and process, and the work goes on without the cache."""
    try:
        yield
    except Exception as exc:
        directory = getattr(exc, "directory", None)
        if not (is_disk_full(exc) or isinstance(exc, (OSError, CacheUnusableError))):
            raise
        if directory is None or directory not in _WARNED:
            _WARNED.add(directory)
            why = (f"no space left on the disk of {directory}, {_free_space(directory)}" if directory is not None
                   else str(exc).split(";")[0])
            log.warning("Not saving %s: %s. Running without it; free space there or point %s (or data.cache_dir) "
                        "at a larger disk to cache again.", what, why, CACHE_ENV)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: Checks every atomic write passes before anything is written: an open output folder's (storage.outputs), which
#: refuses to replace a file no tool wrote there
WRITE_CHECKS: list[Callable[[Path], None]] = []


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block succeeds it is fsynced and renamed to ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched; a full disk (``ENOSPC``/``EDQUOT``)
    becomes one :class:`DiskFullError` naming the directory and its free space. Not ``mkstemp``: its 0600 mode
    would hide a shared cache from other users. The temporary file is in the destination directory, so the rename
    never crosses file systems (a copy could be killed half-way under the final name). Its name carries the writer's
    pid and host: the next write of ``path`` removes what a killed writer left (:func:`remove_dead_temporaries`).
    Every check in :data:`WRITE_CHECKS` sees ``path`` first.
    """
    path = Path(path)
    for check in tuple(WRITE_CHECKS):
        check(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{_HOST_TAG}{uuid.uuid4().hex[:4]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as exc:
        if not isinstance(exc, DiskFullError) and is_disk_full(exc, path.parent):  # before the unlink: torch's case
            tmp.unlink(missing_ok=True)  # first: the message reports the space this file took back
            raise disk_full_error(path, exc) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


#: The first 4 hex digits of every temporary name's 8: this host's, so a pid is only ever judged on its own host (a
#: shared file system holds other hosts' writers, whose pids mean nothing here).
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]
_TEMPORARY = re.compile(r"(?P<name>.+)\.(?P<pid>\d+)\.(?P<host>[0-9a-f]{4})[0-9a-f]{4}\.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (another user's counts: it cannot be signalled, but it lives)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def dead_writer(name: str) -> bool:
    """``name`` is a temporary of :func:`atomic_path` (or a temporary folder named the same way) whose writer, a
    process of this host, has died: nobody will ever rename it."""
    match = _TEMPORARY.fullmatch(name) or re.fullmatch(r".+-(?P<pid>\d+)\.(?P<host>[0-9a-f]{4})[0-9a-f]{4}", name)
    return bool(match) and match["host"] == _HOST_TAG and not pid_alive(int(match["pid"]))


def remove_dead_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` (``<name>.<pid>.<hex>.tmp`` beside it) left by writers of this host that
    died (``kill -9`` mid-write); returns them. :func:`atomic_path` calls this before every write, so every file the
    project writes atomically (checkpoints, caches, compiled kernels, reports) sweeps its own killed writers'
    leftovers. A live writer's temporary, or another host's, is left alone."""
    path, removed = Path(path), []
    with contextlib.suppress(OSError):  # a folder we cannot list or write: nothing to sweep here
        for leftover in path.parent.glob(f"{glob_escape(path.name)}.*.tmp"):
            if dead_writer(leftover.name):
                with contextlib.suppress(OSError):
                    leftover.unlink()
                    removed.append(leftover)
    for leftover in removed:
        log.info("Removed %s, left by a writer that was killed", leftover)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def temporary_name(prefix: str) -> str:
    """A unique name for a temporary folder of this process, ``<prefix>-<pid>.<hex>``, that :func:`dead_writer`
    recognises once its writer has died."""
    return f"{prefix}-{os.getpid()}.{_HOST_TAG}{uuid.uuid4().hex[:4]}"


_QUIETED: list = []


def quiet_full_disk_reports() -> None:
    """Once per process, for the writers that are not ours: a background thread that dies of a full disk
    (TensorBoard's event writer) logs one warning instead of printing its traceback, and its owner raises the error
    again at its next call, in the main thread, where the scripts make it one ``error:`` line; a log file on a full
    disk (``train.log``) drops its lines silently instead of printing ``--- Logging error ---`` and a traceback for
    each (the console still shows them). Anything else keeps Python's report."""
    import sys
    import threading

    if _QUIETED:
        return
    thread_hook, handle_error = threading.excepthook, logging.Handler.handleError
    _QUIETED.append((thread_hook, handle_error))

    def hook(args) -> None:
        if args.exc_value is not None and is_disk_full(args.exc_value):
            log.warning("The thread %s (%s) stopped: %s: %s; its owner reports the full disk at its next write.",
                        getattr(args.thread, "name", "?"), type(args.thread).__name__, type(args.exc_value).__name__,
                        args.exc_value)
            return
        thread_hook(args)

    def handleError(handler, record) -> None:  # noqa: N802  (logging's name)
        if not is_disk_full(sys.exc_info()[1]):
            handle_error(handler, record)

    threading.excepthook = hook
    logging.Handler.handleError = handleError


def atomic_write(path: str | Path, data: str | bytes | memoryview) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically: see :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


class DamagedFileError(ValueError):
    """A file whose bytes fail the checksum it records (a flipped bit, a torn copy); the message names the part."""


SMALL_FILE_BYTES = 16 << 20  # a record, marker, report or config this project writes is far smaller


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (through any symlink), else an ``OSError`` naming it: the
    one way src/ opens a file to read it. It is opened without blocking and checked on the open descriptor, so a
    named pipe (which would wait for ever for a writer) or a device (``/dev/zero`` never ends) put where a file is
    expected is refused at once, and cannot be swapped in between a check and the read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "a device or socket"
            raise OSError(errno.EINVAL, f"not a regular file but {kind}", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, limit: int = SMALL_FILE_BYTES) -> bytes:
    """The bytes of a small file (:func:`open_regular`), or an ``OSError`` naming it if it holds more than ``limit``:
    a sparse file of 100 GB put in a record's place is not read into memory."""
    with open_regular(path) as fh:  # its size first (then nothing is read), and a bounded read: /proc's files say 0
        data = None if os.fstat(fh.fileno()).st_size > limit else fh.read(limit + 1)
    if data is None or len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {megabytes(limit)}, more than such a file ever holds", os.fspath(path))
    return data


def read_text(path: str | Path, limit: int = SMALL_FILE_BYTES, errors: str = "strict") -> str:
    """:func:`read_bytes` as UTF-8 text: the one way src/ reads a record, manifest, marker or config file (a
    ``UnicodeDecodeError``, a ``ValueError``, for bytes that are not UTF-8 unless ``errors`` says otherwise)."""
    return read_bytes(path, limit).decode("utf-8", errors)


def parse_json(text: str | bytes, **options):
    """``json.loads`` for text from a file a user did not write: one that nests deeper than Python's parser goes
    (``[[[[...``) is a ``ValueError`` like any other bad JSON, not a ``RecursionError`` its readers do not expect."""
    try:
        return json.loads(text, **options)
    except RecursionError:
        raise ValueError("it nests deeper than Python's JSON parser goes (no file of this project does)") from None


def read_json(path: str | Path, limit: int = SMALL_FILE_BYTES, **options):
    """The JSON of a small file (:func:`read_text`, :func:`parse_json`): an ``OSError`` or a ``ValueError`` when it
    cannot be used, whatever is wrong with it."""
    return parse_json(read_text(path, limit), **options)


def read_yaml(path: str | Path, limit: int = SMALL_FILE_BYTES):
    """The YAML of a small file (a run's ``.hydra/overrides.yaml``, a sweep's record) as plain data, read as Hydra
    and OmegaConf read it (interpolations stay text): an ``OSError`` or a ``ValueError`` when it cannot be used,
    whatever is wrong with it."""
    from omegaconf import OmegaConf

    text = read_text(path, limit)
    try:
        return OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except Exception as exc:  # the YAML parser's and OmegaConf's errors, a RecursionError: all about the text
        raise ValueError(f"not YAML this project writes: {type(exc).__name__}: {str(exc)[:80]}") from None


def read_valid(path: str | Path, read: Callable, valid: Callable[[object], bool], form: str):
    """``read(path)`` (:func:`read_json`, :func:`read_yaml`) if the file exists and holds ``valid`` data; else None,
    with one warning naming the file and what is wrong (unreadable, or not ``form``): a run's records read back by a
    summary, a resume or a sweep never stop them for one edited or broken file."""
    if not os.path.lexists(path):
        return None
    try:
        data = read(path)
    except (OSError, ValueError) as exc:
        log.warning("Ignoring %s: %s", path, exc)
        return None
    if not valid(data):
        log.warning("Ignoring %s: not %s", path, form)
        return None
    return data


def file_sha256(path: str | Path, offset: int = 0) -> str:
    """The sha256 (hex) of a file's bytes from ``offset`` on, read in blocks (hashlib releases the GIL meanwhile):
    the one file hash of src/ (exported weights, pinned downloads, torch.hub's file, the rows of a store)."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        fh.seek(offset)
        while block := fh.read(1 << 23):
            digest.update(block)
    return digest.hexdigest()


def zip_damage(path: str | Path | BinaryIO) -> tuple[str, int | None] | None:
    """The first member of a zip-format torch file (its name, the CRC-32 of its bytes) whose bytes fail the CRC-32
    the zip records for them (``torch.load`` reads without checking), else None; None too for torch's legacy format
    (no checksums) and for a file too broken to open as a zip (``torch.load`` then says why). ``path`` may be an
    open file (:func:`load_torch` checks and loads through one descriptor); a path that is not a regular file is an
    ``OSError`` (:func:`open_regular`)."""
    with contextlib.ExitStack() as stack:
        raw = path if hasattr(path, "read") else stack.enter_context(open_regular(path))
        try:
            archive = stack.enter_context(zipfile.ZipFile(raw))
        except (zipfile.BadZipFile, OSError):
            return None
        return _first_damaged_member(archive, raw)


def _first_damaged_member(archive: zipfile.ZipFile, raw: BinaryIO) -> tuple[str, int | None] | None:
    for info in archive.infolist():
        if info.compress_type != zipfile.ZIP_STORED:  # torch stores members uncompressed; zipfile checks others
            try:
                with archive.open(info) as member:
                    while member.read(1 << 24):
                        pass
            except (zipfile.BadZipFile, EOFError, zlib.error):
                return info.filename, None
            continue
        raw.seek(info.header_offset)
        header = raw.read(30)  # the local file header, then its name and extra field, then the bytes
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            return info.filename, None
        raw.seek(info.header_offset + 30 + int.from_bytes(header[26:28], "little")
                 + int.from_bytes(header[28:30], "little"))
        crc, left = 0, info.compress_size
        while left > 0:
            chunk = raw.read(min(left, 1 << 24))
            if not chunk:
                return info.filename, None
            crc, left = zlib.crc32(chunk, crc), left - len(chunk)
        if crc != info.CRC:
            return info.filename, crc
    return None


def load_torch(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` after the zip's CRC-32s, which ``torch.load`` does not verify: the one
    way src/ reads a torch file (checkpoints add their own messages, art_diffusion.checkpoints.loading). A file whose
    bytes fail them raises :class:`DamagedFileError` before anything is unpickled."""
    import torch  # storage is imported by tools that never need torch's start-up time

    with open_regular(path) as fh:
        if damage := zip_damage(fh):
            raise DamagedFileError(f"{path}: zip member {damage[0]} fails the CRC-32 checksum the file records (a "
                                   "damaged file: a disk or copy error, or an edit)")
        fh.seek(0)
        return torch.load(fh, map_location=map_location, weights_only=True)


def save_torch(obj, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically, the one way src/ saves with torch: serialised to memory first (a
    pickling error leaves not even a temporary file, and torch's own file writer, which turns a full disk into a
    ``RuntimeError`` without the errno, never touches the disk), then :func:`atomic_write`."""
    import torch  # storage is imported by tools that never need torch's start-up time

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getbuffer())


#: Characters a name from data may not bring into a file name: separators, NUL and other control characters, and
#: ``%`` itself (the escape). Each becomes ``%XX``.
_UNSAFE = frozenset({"/", "\\", "%", ":"} | {chr(c) for c in range(32)} | {chr(127)})
_MAX_NAME_BYTES = 200  # file systems allow 255; room for a prefix, a suffix and a temporary extension


def file_identity(path: str | Path) -> tuple[int, int] | None:
    """The file or folder ``path`` is, through any symlink or hard link: (device, inode); None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


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


def temporaries_under(directory: str | Path) -> list[Path]:
    """Every temporary file :func:`atomic_path` left anywhere under ``directory`` (``<name>.<pid>.<hex>.tmp``) by a
    killed writer: remove them only while owning the directory."""
    pattern = re.compile(r".+\.\d+\.[0-9a-f]{8}\.tmp")
    return sorted(p for p in Path(directory).rglob("*.tmp") if pattern.fullmatch(p.name) and p.is_file())


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files :func:`atomic_path` left beside ``path`` by a killed writer (remove them under a lock)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{glob_escape(path.name)}.*.tmp"))
