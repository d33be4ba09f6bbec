"""Locks: :func:`file_lock`, the one inter-process lock, plus a record of the holder's pid and host.

The lock itself is the kernel's (flock): a process that dies, even by ``kill -9`` or a node crash that ends its
job, releases it, so a lock is never stale. The record beside it (``<lock>.json``) is what makes the messages
useful: who holds a run dir that a second ``resume=`` wants, and which dead process a requeued job takes over from.

Several hosts (cluster nodes sharing a file system): a free flock proves the holder dead only where the lock is
coherent between hosts, and on a shared file system that is not guaranteed (NFS mounted with ``local_lock=flock``
or ``nolock``, Lustre with ``localflock``: each host then sees its own locks only), and a pid cannot be checked on
another host. So a record left by another host is trusted over the free lock: its holder counts as live while it
is fresh. Holders refresh their records (``beat``) every :data:`HEARTBEAT_S` seconds from a daemon thread; a record
of another host is taken over only when

- it has been silent for :data:`LEASE_S` seconds (its host or process is gone: a live process beats), or
- it was written by an earlier run of the same SLURM job (same ``SLURM_JOB_ID``, lower ``SLURM_RESTART_COUNT``):
  SLURM starts a requeued job again only once it has ended the previous run, on every node.

A record of this host whose lock is free is a dead process's, as on one machine: taken over, with a warning.

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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import filelock

from art_diffusion import UserError
from art_diffusion.storage.files import DiskFullError, atomic_write, read_json

log = logging.getLogger(__name__)

_HELD_FOR_LIFE: dict[Path, filelock.FileLock] = {}  # this process's reader registrations, kept until exit
HEARTBEAT_S = 30.0   # how often a holder refreshes its record's ``beat``
LEASE_S = 120.0      # a record of another host silent this long is a dead holder's (four missed beats)
_BEATING: set[Path] = set()  # the lock paths whose records this process refreshes
_BEAT_LOCK = threading.Lock()
_beat_thread: threading.Thread | None = None


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
        return read_json(record_path(lock_path))
    except (OSError, ValueError):
        return None


def describe(record: dict | None) -> str:
    if not record:
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_number(record, "since")))
    job = f", SLURM job {record['slurm_job_id']}" if record.get("slurm_job_id") else ""
    return f"pid {record.get('pid')} on host {record.get('host')} (since {since}{job})"


def _number(record: dict, key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _slurm_run() -> tuple[str | None, int]:
    return os.environ.get("SLURM_JOB_ID"), int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _write_record(lock_path: Path, since: float | None = None) -> None:
    job, restart = _slurm_run()
    now = time.time()
    atomic_write(record_path(lock_path), json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "since": now if since is None else since, "beat": now,
        "slurm_job_id": job, "slurm_restart": restart}) + "\n")


def _beat_forever() -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        with _BEAT_LOCK:
            for lock_path in sorted(_BEATING):
                if not lock_path.exists():  # its folder was removed (a finished test's, a deleted cache)
                    _BEATING.discard(lock_path)
                    continue
                try:
                    _write_record(lock_path, since=_number(holder(lock_path) or {}, "since") or None)
                except (OSError, DiskFullError) as error:  # a full or unreachable disk: the next beat tries again
                    log.warning("Could not refresh the lock record of %s: %s", lock_path, error)


def _start_beating(lock_path: Path) -> None:
    """Refresh ``lock_path``'s record every HEARTBEAT_S seconds until :func:`_stop_beating` (one thread for all)."""
    global _beat_thread
    with _BEAT_LOCK:
        _BEATING.add(lock_path)
        if _beat_thread is None or not _beat_thread.is_alive():
            _beat_thread = threading.Thread(target=_beat_forever, name="lock-heartbeat", daemon=True)
            _beat_thread.start()


def _stop_beating(lock_path: Path) -> None:
    with _BEAT_LOCK:
        _BEATING.discard(lock_path)


def ended(record: dict | None) -> str | None:
    """Why the holder that left ``record`` (whose flock this process could take) is known to be gone, or None when
    it may be alive on another host (see the module doc)."""
    if not record:
        return "no record"
    if record.get("host") == socket.gethostname():
        return "no longer running"  # this host's kernel released its lock: the process is dead
    job, restart = _slurm_run()
    if job and record.get("slurm_job_id") == job and _number(record, "slurm_restart") < restart:
        return "an earlier run of this SLURM job, which SLURM ended before requeueing it"
    silent = time.time() - (_number(record, "beat") or _number(record, "since"))
    if silent >= LEASE_S:
        return f"silent for {silent:.0f} s"
    return None


def _live_elsewhere(record: dict | None, what: str, advice: str) -> InUseError:
    silent = time.time() - (_number(record, "beat") or _number(record, "since"))
    return InUseError(
        f"{what} is in use by {describe(record)}, which refreshed its record {silent:.0f} s ago. {advice} A process "
        f"on another host cannot be checked from here: if that host is gone, its record is taken over once it has "
        f"been silent for {LEASE_S:.0f} s.")


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
    previous = holder(lock_path)
    reason = ended(previous) if previous else None
    if previous and reason is None:
        lock.release()
        raise _live_elsewhere(previous, what, advice)
    try:
        if previous:
            log.warning("Taking over %s from %s, %s (stale lock %s)", what, describe(previous), reason, lock_path)
        _write_record(lock_path)
        _start_beating(lock_path)
        yield
    finally:
        _stop_beating(lock_path)
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
    _start_beating(lock_path)
    _HELD_FOR_LIFE[lock_path] = lock


def registration_path(directory: Path) -> Path:
    """This process's registration file in ``directory`` (one per host and pid)."""
    return directory / f"{socket.gethostname()}-{os.getpid()}.lock"


def in_use(directory: Path) -> bool:
    """True while a live process holds a registration in ``directory``; those of dead ones are removed (a reader on
    another host counts as live while its record is fresh, see the module doc)."""
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
            if ended(holder(lock_path)) is None:
                live = True
                continue
            record_path(lock_path).unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
        finally:
            probe.release()
    return live
