"""The project's one of each file mechanism: the per-user cache directory, an atomic write, an inter-process lock
and the record of who holds it.

- :mod:`~art_diffusion.storage.files`: :func:`cache_dir` (:func:`optional_cache_dir` for a cache the work can
  do without: None and one warning on a read-only disk), :func:`reserve` (space taken before a big write),
  :func:`atomic_path` / :func:`atomic_write` (temporary file in the destination directory, fsync, rename; a full
  disk is one :class:`DiskFullError`).
- :mod:`~art_diffusion.storage.locks`: :func:`file_lock` (the kernel's flock, never stale), :func:`claim` (hold a
  lock or refuse naming the holder: a run dir's one owner), :func:`register` / :func:`in_use` (live readers).
"""

from art_diffusion.storage.files import (
    CACHE_ENV,
    CacheUnusableError,
    DiskFullError,
    atomic_path,
    atomic_write,
    cache_dir,
    cache_root,
    megabytes,
    optional_cache_dir,
    reserve,
    stale_temporaries,
    unwritable,
)
from art_diffusion.storage.locks import (
    InUseError,
    claim,
    describe,
    file_lock,
    holder,
    in_use,
    record_path,
    register,
    registration_path,
)

__all__ = ["CACHE_ENV", "CacheUnusableError", "DiskFullError", "InUseError", "atomic_path", "atomic_write",
           "cache_dir", "cache_root", "claim", "describe", "file_lock", "holder", "in_use", "megabytes",
           "optional_cache_dir", "record_path", "register", "registration_path", "reserve", "stale_temporaries",
           "unwritable"]
