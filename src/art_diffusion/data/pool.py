"""An ordered map over a process pool, for the one-off passes over all files (header checks, the pixel cache, the
demo's images)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

log = logging.getLogger(__name__)

In, Out = TypeVar("In"), TypeVar("Out")

_CHUNKS_PER_WORKER = 16  # small enough to balance slow files across workers, large enough to amortise the IPC
_PROGRESS_EVERY_S = 30.0  # a long pass says how far it got, a short one stays quiet


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_map(fn: Callable[[In], Out], items: list[In], workers: int, what: str) -> Iterator[Out]:
    """``fn`` over ``items`` in order, in ``workers`` processes (inline when ``workers`` <= 1 or few items)."""
    if workers <= 1 or len(items) < 2 * workers:
        results: Iterable[Out] = map(fn, items)
        yield from _with_progress(results, len(items), what)
        return
    chunksize = max(1, len(items) // (workers * _CHUNKS_PER_WORKER))
    with multiprocessing.get_context().Pool(workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        yield from _with_progress(pool.imap(fn, items, chunksize=chunksize), len(items), what)


def _die_with_parent(parent: int) -> None:
    """In a pool worker: it ends with the pool's owner. SIGTERM ends the process, as ``Pool.terminate()`` expects (a
    forked worker inherits its parent's Python handler, and a submitit job's, under SLURM or submitit_local, only logs
    SIGTERM: the pool never ends). And a ``kill -9`` of the owner kills its workers (Linux's parent-death signal):
    an orphaned worker would otherwise paint or cache the rest of its chunk into a folder the next run is removing."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if os.getppid() != parent:  # a forkserver's child: its parent is not the owner (it ends at its next task)
        return
    with contextlib.suppress(OSError, AttributeError):  # not Linux (no prctl): likewise
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the owner died between the two lines: nobody is left to signal us
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _with_progress(results: Iterable[Out], total: int, what: str) -> Iterator[Out]:
    start = last = time.monotonic()
    for done, result in enumerate(results, 1):
        if time.monotonic() - last > _PROGRESS_EVERY_S:
            last = time.monotonic()
            rate = done / (last - start)
            log.info("%s: %d/%d files (%.0f/s, about %.0f s left)", what, done, total, rate, (total - done) / rate)
        yield result
