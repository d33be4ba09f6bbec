"""The project's one of each file mechanism: the per-user cache directory, an atomic write, an inter-process lock
and the record of who holds it.

- :mod:`~art_diffusion.storage.files`: :func:`cache_dir`, :func:`atomic_path` / :func:`atomic_write` (temporary
  file in the destination directory, fsync, rename; a full disk is one :class:`DiskFullError`).
- :mod:`~art_diffusion.storage.locks`: :func:`file_lock` (the kernel's flock, never stale), :func:`claim` (hold a
  lock or refuse naming the holder: a run dir's one owner), :func:`register` / :func:`in_use` (live readers).
"""

from art_diffusion.storage.files import (
    CACHE_ENV,
    DiskFullError,
    atomic_path,
    atomic_write,
    cache_dir,
    inside,
    json_text,
    safe_name,
    stale_temporaries,
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

__all__ = ["CACHE_ENV", "DiskFullError", "InUseError", "atomic_path", "atomic_write", "cache_dir", "claim",
           "describe", "file_lock", "holder", "in_use", "record_path", "register", "registration_path",
           "stale_temporaries", "json_text", "write_json", "inside", "safe_name"]
