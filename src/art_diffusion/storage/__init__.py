"""The project's one of each file mechanism: the per-user cache directory, an atomic write, an inter-process lock
and the record of who holds it.

- :mod:`~art_diffusion.storage.files`: :func:`cache_dir` (:func:`optional_cache_dir` for a cache the work can do
  without: None and one warning on a read-only disk), :func:`reserve` (space taken before a big write),
  :func:`atomic_path` / :func:`atomic_write` (temporary file in the destination directory, fsync, rename; a full disk is
  one :class:`DiskFullError`, whatever exception type carried it: :func:`is_disk_full`; a killed writer's temporary is
  removed by the next write, :func:`remove_dead_temporaries`), :func:`save_torch` (every ``torch.save``) and
  :func:`load_torch` (every ``torch.load`` of a file, its zip's CRC-32s checked first: :class:`DamagedFileError`),
  :func:`open_regular` and :func:`read_bytes` / :func:`read_text` / :func:`read_json` / :func:`read_yaml` (every file
  src/ reads: a regular file or an OSError, never a wait on a named pipe; a small file read whole is bounded; bad
  content is a ValueError, JSON or YAML nested too deep included; :func:`parse_json` for text; :func:`read_valid`:
  a record read back, or None and one warning),
  :func:`file_sha256` (every hash of a file), :func:`file_identity` (device and inode: the same file by any path),
  :func:`optional_write` (a cache's write: a full disk is one warning), :func:`write_json` (strict JSON),
  :func:`inside` / :func:`safe_name` (a path built from names that came from data or a file, always under its root).
- :mod:`~art_diffusion.storage.outputs`: :func:`output_folder` (a tool's ``output_dir``: it never replaces a file no
  tool wrote there, nor one of the call's inputs: :class:`ForeignFileError`); its record marks the folder, so the
  lister skips it (outputs never become inputs).
- :mod:`~art_diffusion.storage.locks`: :func:`file_lock` (the kernel's flock, never stale), :func:`claim` (hold a
  lock or refuse naming the holder: a run dir's one owner), :func:`register` / :func:`in_use` (live readers).
"""

from art_diffusion.storage.files import (
    CACHE_ENV,
    CacheUnusableError,
    DamagedFileError,
    DiskFullError,
    atomic_path,
    atomic_write,
    cache_dir,
    cache_root,
    disk_full_error,
    ensure_room,
    file_identity,
    file_sha256,
    inside,
    is_disk_full,
    json_text,
    load_torch,
    megabytes,
    open_regular,
    optional_cache_dir,
    optional_write,
    parse_json,
    quiet_full_disk_reports,
    read_bytes,
    read_json,
    read_text,
    read_valid,
    read_yaml,
    remove_dead_temporaries,
    reserve,
    safe_name,
    save_torch,
    stale_temporaries,
    temporaries_under,
    temporary_name,
    unwritable,
    write_json,
    zip_damage,
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
from art_diffusion.storage.outputs import ForeignFileError, OutputFolder, output_folder

__all__ = ["CACHE_ENV", "CacheUnusableError", "DamagedFileError", "DiskFullError", "ForeignFileError", "InUseError",
           "OutputFolder", "atomic_path", "atomic_write", "cache_dir", "cache_root", "claim", "describe",
           "disk_full_error", "ensure_room", "file_identity", "file_lock", "file_sha256", "holder", "in_use",
           "inside", "is_disk_full", "json_text", "load_torch", "megabytes", "open_regular", "optional_cache_dir",
           "optional_write", "output_folder", "parse_json", "quiet_full_disk_reports", "read_bytes", "read_json",
           "read_text", "read_valid", "read_yaml", "record_path", "register", "registration_path",
           "remove_dead_temporaries", "reserve", "safe_name", "save_torch", "stale_temporaries", "temporaries_under",
           "temporary_name", "unwritable", "write_json", "zip_damage"]
