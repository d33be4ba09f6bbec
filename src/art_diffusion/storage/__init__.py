"""The project's one of each file mechanism: the per-user cache directory, an atomic write, an inter-process lock
and the record of who holds it.

- :mod:`~art_diffusion.storage.files`: :func:`cache_dir` (:func:`optional_cache_dir` for a cache the work can
  do without: None and one warning on a read-only disk), :func:`reserve` (space taken before a big write),
  :func:`atomic_path` / :func:`atomic_write` (temporary file in the destination directory, fsync, rename; a full
  disk is one :class:`DiskFullError`; a killed writer's temporary is removed by the next write,
  :func:`remove_dead_temporaries`), :func:`write_json` (strict JSON), :func:`inside` / :func:`safe_name` (a
  path built from names that came from data or a file, always under its root).
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
    inside,
    json_text,
    megabytes,
    optional_cache_dir,
    remove_dead_temporaries,
    reserve,
    safe_name,
    stale_temporaries,
    temporaries_under,
    temporary_name,
    unwritable,
    write_json,
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
           "cache_dir", "cache_root", "claim", "describe", "file_lock", "holder", "in_use", "inside", "json_text",
           "megabytes", "optional_cache_dir", "record_path", "register", "registration_path",
           "remove_dead_temporaries", "reserve", "safe_name", "stale_temporaries", "temporaries_under",
           "temporary_name", "unwritable",
           "write_json"]
