"""Stores of rows lined up with a file listing, built once and memory-mapped: the pixel cache and the target-feature
store share this one mechanism.

A store is ``<dir>/<slot>-<content>.npy`` (row i = file i) plus a ``.json`` manifest written last, so its presence
marks the store complete. ``content`` hashes everything the rows depend on, so any change builds a new store;
``slot`` hashes the settings that name "the same store", so the new store replaces the stale one of its slot. A
build runs under the slot's file lock (DDP ranks and concurrent runs wait for one builder) and writes to temporary
names renamed into place, so a killed build never looks complete. Rows are written with plain writes into a file
whose space is reserved first (never through a memory map: a disk that fills up under a mapped file kills the
process with SIGBUS), so a full disk stops a build at once, in one message, leaving no partial file.

A store on disk is untrusted input: opening one checks that it is exactly what its builder wrote, and a store that
is not is logged once and rebuilt, never used and never a traceback. The array's header must be the one ``_build``
writes (format 1.0, C order, the expected shape and dtype with its byte order) and the file exactly as long as that
header says; the manifest must carry the seal its builder put in it (a hash of the store's
name, the header's bytes and the manifest's exact text: :func:`sealed`), so any edit of either, or a manifest copied
from another store, is seen; and every user of a store declares what a valid manifest is (``check``, see
:func:`mismatch`), so a manifest of the wrong form or one that names another store's inputs is refused before its
values are used. The rows too: the builder hashes them as it writes them (``rows_sha256`` in the sealed manifest)
and every open by a process that did not just build it hashes the file's rows again (about 1 s per GB, once per
run, outside the slot's lock so that ranks hash side by side; it also brings the rows into the page cache the
training reads next), so a flipped bit or an edited row means a rebuild, never a silently wrong image or target.

A store in use is never deleted under its reader: every process that opens one registers in ``<store>.readers/``
(a lock it holds until it exits, see art_diffusion.storage.locks), and a stale store is removed only once no live
process is registered; until then it is kept, and the next run that opens this slot tries again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from tokenize import TokenError

import numpy as np

from art_diffusion.storage import (
    DiskFullError,
    atomic_path,
    atomic_write,
    file_lock,
    file_sha256,
    megabytes,
    open_regular,
    parse_json,
    read_text,
    reserve,
    stale_temporaries,
    unwritable,
)
from art_diffusion.storage.locks import in_use, register, registration_path

log = logging.getLogger(__name__)

_DISK_MARGIN = 1.1  # refuse to start a build that would fill the disk
MAX_MANIFEST_BYTES = 1 << 30  # a manifest lists every file of its data (~150 bytes each): a larger one is not read


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


Check = Callable[[dict], str | None]  # why a manifest is not one this store's builder writes, or None
_SEAL_HEAD = '{"seal": "'  # a sealed file's text begins with its seal: {"seal": "<64 hex digits>", <content>}


def mismatch(manifest: dict, expected: dict) -> str | None:
    """Why ``manifest`` is not of the form ``expected`` gives, or None: the same keys, and per key either a type (the
    value must be one; a bool is no int) or a value (equal to it after a JSON round trip, as the builder wrote it)."""
    if set(manifest) != set(expected):
        differ = [key[:40] for key in sorted(set(manifest) ^ set(expected))[:3]]  # a wrong file may have 10**6
        return f"its manifest's keys are not {sorted(expected)} (it differs in {differ})"
    for key, want in expected.items():
        value = manifest[key]
        if isinstance(want, type):
            if not isinstance(value, want) or (isinstance(value, bool) and want is not bool):
                return f"its manifest's {key!r} is a {type(value).__name__}, not a {want.__name__}"
        elif value != want and value != parse_json(json.dumps(want)):  # the round trip only where it may differ
            return f"its manifest's {key!r} is not this store's ({json.dumps(value)[:80]})"
    return None


def _digest_text(name: str, header: bytes, body: str) -> str:
    return hashlib.sha256(f"{name}\n{header.hex()}\n{body}".encode(errors="surrogatepass")).hexdigest()


def sealed(name: str, content: dict, header: bytes = b"") -> str:
    """The JSON text of ``content`` for the file ``name``, its seal first: a hash of the name, ``header`` (the bytes
    of the array the file describes, if any) and the exact text of ``content``. See :func:`unsealed`; the caches'
    one seal (the row stores' manifests, the header-check cache)."""
    if "seal" in content:
        raise ValueError("sealed content cannot use the key 'seal'")
    body = json.dumps(content)
    return f'{_SEAL_HEAD}{_digest_text(name, header, body)}"' + (f", {body[1:]}" if content else "}")


def unsealed(name: str, text: str, header: bytes = b"") -> tuple[dict | None, str | None]:
    """``(content, why the seal is wrong or None)`` of a file's ``text`` that :func:`sealed` wrote for ``name`` (and
    ``header``); ``(None, why)`` when the text is not a JSON object. The seal is checked on the text as it is (no
    second serialisation), so any edit of it, of the header or a file copied from another name is seen."""
    try:
        content = parse_json(text)
    except ValueError as exc:
        return None, f"not JSON: {type(exc).__name__}: {str(exc)[:80]}"
    if not isinstance(content, dict):
        return None, f"a JSON {type(content).__name__}, not an object"
    found, end = content.pop("seal", None), len(_SEAL_HEAD) + 64
    rest = text[end + 1:] if text.startswith(_SEAL_HEAD) and text[end:end + 1] == '"' else None
    body = "{" + rest[2:] if rest and rest.startswith(", ") else "{}" if rest == "}" else None
    if found is None:
        return content, "no seal: an older version's file, or an edited one"
    if body is None or found != text[len(_SEAL_HEAD):end] or found != _digest_text(name, header, body):
        return content, "its seal does not match: an edited file, or one copied from another name"
    return content, None


def _header(path: Path) -> tuple[bytes, tuple[int, ...], bool, np.dtype]:
    """The raw bytes of the .npy header at ``path`` and what they say: shape, fortran_order, dtype."""
    with open_regular(path) as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # numpy parses the header as a Python literal
        try:
            version = np.lib.format.read_magic(fh)
            if version != (1, 0):
                raise ValueError(f"format version {version}, not the (1, 0) this project writes")
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fh)
        except (SyntaxError, TypeError, TokenError, RecursionError) as exc:  # what else numpy's parser lets through
            raise ValueError(f"an unreadable .npy header ({type(exc).__name__}: {exc})") from exc
        size = fh.tell()
        fh.seek(0)
        return fh.read(size), shape, fortran_order, dtype


def read_manifest(path: Path, shape: tuple[int, ...], dtype, check: Check) -> tuple[dict | None, str | None]:
    """``(manifest, None)`` for a complete store at ``path`` whose header and manifest are exactly as its builder
    wrote them; ``(None, None)`` when there is none (never completed); ``(None, why)`` when it is damaged, truncated
    or edited. Reads no rows: :func:`rows_damage` checks them against the manifest's ``rows_sha256``, which it keeps
    (``check`` sees the manifest without it)."""
    if not path.with_suffix(".json").exists():
        return None, None  # a build never finished (or never began): the manifest is written last
    try:
        text = read_text(path.with_suffix(".json"), MAX_MANIFEST_BYTES, errors="surrogateescape")
        header, found_shape, fortran_order, found_dtype = _header(path)
        length = path.stat().st_size
    except (OSError, ValueError, EOFError) as exc:  # unreadable, no .npy header
        return None, f"{type(exc).__name__}: {exc}"
    dtype, shape = np.dtype(dtype), tuple(int(n) for n in shape)
    expected_length = len(header) + int(np.prod(shape)) * dtype.itemsize
    if found_shape != shape or found_dtype != dtype or found_dtype.str != dtype.str:
        return None, f"its header says {found_shape} {found_dtype.str}, expected {shape} {dtype.str}"
    if fortran_order:
        return None, "its header says fortran_order: True, and its rows were written in C order"
    if length != expected_length:
        return None, f"{length} bytes, expected {expected_length}"
    manifest, seal_wrong = unsealed(path.name, text, header)
    if manifest is None:
        return None, f"its manifest is {seal_wrong}"
    rows_sha256 = manifest.pop(_ROWS_KEY, None)
    if why := check(manifest):  # first: it names what is wrong; the seal then sees any well-formed edit
        return None, why
    if seal_wrong:
        return None, f"its header or manifest is not what its builder wrote, {seal_wrong}"
    if not isinstance(rows_sha256, str):
        return None, "its manifest has no checksum of its rows (an older version's store)"
    return {**manifest, _ROWS_KEY: rows_sha256}, None


_ROWS_KEY = "rows_sha256"  # the manifest's checksum of the rows, added by _build, checked by rows_damage


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """Which file is at ``path`` now: a rebuild renames a new file into place (a new inode)."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_mtime_ns


def rows_damage(path: Path, manifest: dict) -> str | None:
    """Why the rows of the store at ``path`` are not the ones its builder wrote (their sha256 is not the manifest's,
    or they cannot be read), or None. Reads the whole file."""
    try:
        digest = file_sha256(path, len(_header(path)[0]))
    except (OSError, ValueError, EOFError) as exc:  # an unreadable block of the disk, a file replaced meanwhile
        return f"its rows cannot be read ({type(exc).__name__}: {exc})"
    if digest != manifest[_ROWS_KEY]:
        return "its rows are not what its builder wrote (their sha256 differs: a flipped bit, an edit)"
    return None


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
    path.with_suffix(".json").unlink(missing_ok=True)  # a rebuild killed half-way then reads as never built
    dtype, row_shape = np.dtype(dtype), tuple(shape[1:])
    written, header, rows_digest = 0, io.BytesIO(), hashlib.sha256()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    header = header.getvalue()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        reserve(fh, fh.tell() + int(np.prod(shape)) * dtype.itemsize, path)

        def write(block: np.ndarray) -> None:
            nonlocal written
            if block.dtype != dtype or tuple(block.shape[1:]) != row_shape or written + len(block) > shape[0]:
                raise ValueError(f"rows {block.dtype} {block.shape} do not fit the store {dtype} {shape} "
                                 f"after {written} rows")
            rows = np.ascontiguousarray(block).data  # the rows' own buffer, no copy
            fh.write(rows)
            rows_digest.update(rows)
            written += len(block)

        extra = fill(write)
        if written != shape[0]:
            raise ValueError(f"the store {path} got {written} of its {shape[0]} rows")
        if _ROWS_KEY in extra:
            raise ValueError(f"a store's manifest cannot use the key {_ROWS_KEY!r}")
    manifest = sealed(path.name, {**extra, _ROWS_KEY: rows_digest.hexdigest()}, header)
    atomic_write(path.with_suffix(".json"), manifest)  # last: its presence marks the store complete


def open_or_build(path: Path, shape: tuple[int, ...], dtype, fill: Callable[[Writer], dict], check: Check,
                  name: str, fix: str) -> tuple[dict, float | None]:
    """``(manifest, seconds spent building or None when reused)`` of the complete store at ``path``, built first by
    ``fill(write) -> manifest`` if missing, stale, damaged or not as its builder wrote it (logged once; built once,
    whoever else asks at the same time); ``check(manifest)`` says why a manifest is not one ``fill`` writes for this
    store, or None (see :func:`mismatch`). This process is registered as the store's reader until it exits. ``name``
    and ``fix`` word the log lines and the out-of-disk error.

    A store this process did not build has its rows hashed (:func:`rows_damage`) after the slot's lock is released,
    while registered as a reader (so it is not removed meanwhile): DDP ranks and concurrent runs hash side by side,
    not in turn. Damaged rows are logged and the store is rebuilt under the lock, unless another process already
    rebuilt it (another file at its path); that one is then checked the same way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    damaged, damaged_why = None, None  # the file (device, inode, mtime) whose rows this process found damaged
    for _ in range(4):
        with file_lock(_slot_lock(path)):  # the slot: builds, readers and removals
            (manifest, why), built_s = read_manifest(path, shape, dtype, check), None
            if manifest is not None and _file_identity(path) == damaged:  # nobody rebuilt it meanwhile
                manifest, why = None, damaged_why
            if why is not None:
                log.warning("The %s %s is damaged or truncated, or not as its builder wrote it (%s): rebuilding it",
                            name, path, why)
            if manifest is None:
                check_disk(path, int(np.prod(shape)) * np.dtype(dtype).itemsize, name, fix)
                start = time.perf_counter()
                _build(path, shape, dtype, fill)
                built_s = time.perf_counter() - start
                log.info("Built the %s %s (%d rows) in %.1f s on host %s", name, path, shape[0], built_s,
                         socket.gethostname())  # by whichever rank or job got here first: the others reuse it
                manifest, why = read_manifest(path, shape, dtype, check)
                if manifest is None:
                    raise OSError(f"The {name} {path} was built but does not read back ({why}); is its disk failing?")
            in_use(_readers(path))  # forgets the registrations of readers that have exited
            register(registration_path(_readers(path)))
            _remove_unused_stale(path, name)
        if built_s is not None:  # its rows were hashed as they were written
            break
        identity = _file_identity(path)
        damaged_why = rows_damage(path, manifest)
        if damaged_why is None:
            break
        damaged = identity
    else:
        raise OSError(f"The {name} {path} was rebuilt but its rows do not read back ({damaged_why}); is its disk "
                      "failing?")
    return {k: v for k, v in manifest.items() if k != _ROWS_KEY}, built_s
