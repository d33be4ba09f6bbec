"""``cpu_memory``: whether the memory of freed CPU tensors is kept for the next step or given back to the system.

glibc's malloc gives every block above its mmap threshold (32 MB at most) a fresh mapping and unmaps it on free. A
CPU training step's activations are such blocks (one 32 x 64 x 128 x 128 bf16 tensor of the article's network is
67 MB), so every step maps them afresh and the kernel zero-fills each page again on first touch: page faults, not
arithmetic, then take about half of the network's forward + backward (BENCHMARKS.md, "Where the time went").
``reuse`` (the default) turns that off through glibc's ``mallopt``: no per-block mappings, no trimming of the heap,
so a step's tensors take the pages the previous step freed, already faulted in. The cost is that the process keeps
its peak resident memory until it exits, which a training run reaches every step anyway. ``release`` leaves glibc's
defaults. The setting is inherited by forked DataLoader workers and is set again by every DDP rank.

Why our own switch: PyTorch's CPU allocator has no cache (its CUDA allocator has), and jemalloc or tcmalloc, which
Intel's guides preload for the same reason, are system libraries that must be set in ``LD_PRELOAD`` before Python
starts; ``mallopt`` is part of the C library every Linux PyTorch build already uses. Elsewhere (macOS, musl, Windows)
``reuse`` does nothing and says so once in the log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

CHOICES = ("reuse", "release")
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>: free memory at the heap's top above this is returned to the system
_M_MMAP_MAX = -4  # the most blocks malloc maps on their own; 0 = none (every block comes from the heap)
#: (mmap max, trim threshold) per setting; release = glibc's documented defaults (65536 blocks, 128 KiB)
_SETTINGS = {"reuse": (0, 2**31 - 1), "release": (65536, 128 * 1024)}
_applied = "release"  # what this process runs with: glibc starts with its defaults


def apply_cpu_memory(setting: str) -> str:
    """Apply ``cpu_memory`` to this process; returns what happened, in words, for the log. A process that runs
    several jobs (a local multirun) takes each job's setting: ``release`` after ``reuse`` restores glibc's limits."""
    global _applied
    if setting not in CHOICES:
        raise ValueError(f"cpu_memory={setting!r} must be one of {', '.join(CHOICES)}")
    if _applied == setting:
        return f"cpu_memory={setting}: " + ("glibc's defaults" if setting == "release" else "already set")
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return f"cpu_memory={setting}: not available here (no glibc), the C library's defaults are kept"
    mmap_max, trim_threshold = _SETTINGS[setting]
    if not (mallopt(_M_MMAP_MAX, mmap_max) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)):
        return f"cpu_memory={setting}: glibc refused the settings, the previous ones are kept"
    _applied = setting
    if setting == "release":
        return "cpu_memory=release: glibc's limits restored (large blocks mapped and returned to the system again)"
    return "cpu_memory=reuse: freed CPU tensors' memory is kept for the next step (no per-tensor mmap, no trim)"


def _glibc_mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it; musl's mallopt is a stub
        return None
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
