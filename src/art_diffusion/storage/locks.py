"""Locks: :func:`file_lock`, the one inter-process lock, plus a record of the holder's pid and host.

The lock itself is the kernel's (flock): a process that dies, even by ``kill -9`` or a node crash that ends its
job, releases it, so a lock is never stale. The record beside it (``<lock>.json``) is what makes the messages
useful: who holds a run dir that a second ``resume=`` wants, and which dead process a requeued job takes over from.

- :func:`claim`: hold a lock for a block or refuse at once, naming the holder (a run dir's one owner).
- :func:`register` / :func:`in_use`: a process marks itself a reader of something for its lifetime (a pixel
  store), and a cleaner asks whether any live reader is left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import filelock

from art_diffusion import UserError
from art_diffusion.storage.files import atomic_write

log = logging.getLogger(__name__)

_HELD_FOR_LIFE: dict[Path, filelock.FileLock] = {}  # this process's reader registrations, kept until exit


def file_lock(path: str | Path, timeout: float = -1) -> filelock.FileLock:
    """An exclusive inter-process lock held on the file ``path`` (created if missing), for ``with`` blocks.

    ``timeout=0`` tries once (``filelock.Timeout`` if another process holds it). The kernel releases the lock of a
    process that dies, however it dies, so a lock is never stale; :func:`claim` adds who holds it.
    """
    return filelock.FileLock(str(path), timeout=timeout)


class InUseError(UserError):
    """Another live process holds the lock; the message names it and what to do."""


def record_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".json")


def holder(lock_path: Path) -> dict | None:
    """The last record written beside ``lock_path`` (pid, host, since), or None."""
    try:
        return json.loads(record_path(lock_path).read_text())
    except (OSError, ValueError):
        return None


def describe(record: dict | None) -> str:
    if not record:
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("since", 0)))
    return f"pid {record.get('pid')} on host {record.get('host')} (since {since})"


def _write_record(lock_path: Path) -> None:
    atomic_write(record_path(lock_path), json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                     "since": time.time()}) + "\n")


@contextlib.contextmanager
def claim(lock_path: str | Path, what: str, advice: str) -> Iterator[None]:
    """Hold ``lock_path`` for the block, or raise :class:`InUseError` at once naming ``what``, the holder and
    ``advice``. A record left by a holder that died (its lock released by the kernel) is taken over, with a log line."""
    lock_path = Path(lock_path)
    lock = file_lock(lock_path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise InUseError(f"{what} is in use by {describe(holder(lock_path))}. {advice}") from None
    try:
        previous = holder(lock_path)
        if previous:
            log.warning("Taking over %s from %s, which is no longer running (stale lock %s)", what,
                        describe(previous), lock_path)
        _write_record(lock_path)
        yield
    finally:
        record_path(lock_path).unlink(missing_ok=True)
        lock.release()


def register(lock_path: str | Path) -> None:
    """Mark this process a user of whatever ``lock_path`` stands for, until it exits (however it exits)."""
    lock_path = Path(lock_path)
    if lock_path in _HELD_FOR_LIFE:
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = file_lock(lock_path, timeout=0)
    lock.acquire()  # a fresh per-process name: nobody else holds it
    _write_record(lock_path)
    _HELD_FOR_LIFE[lock_path] = lock


def registration_path(directory: Path) -> Path:
    """This process's registration file in ``directory`` (one per host and pid)."""
    return directory / f"{socket.gethostname()}-{os.getpid()}.lock"


def in_use(directory: Path) -> bool:
    """True while a live process holds a registration in ``directory``; those of dead ones are removed."""
    live = False
    for lock_path in sorted(directory.glob("*.lock")):
        if lock_path in _HELD_FOR_LIFE:
            live = True
            continue
        probe = file_lock(lock_path, timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            live = True
            continue
        try:
            record_path(lock_path).unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
        finally:
            probe.release()
    return live
