"""The start-up check of the uncached pipeline: every file's header, in parallel, remembered by path, size and mtime.

Opening a header finds most bad files (HTML pages, empty files, bombs, tiny images) for a few KB of reading,
so a clear error can stop a hopeless run before training. Damage deeper in a file (truncated or corrupt pixel
data) is found later, lazily, by the DataLoader worker that decodes it. A second run over the same folder only
re-checks files whose size or mtime changed: its start-up is one directory walk. The cache is untrusted input: one
that is unreadable, of another form or edited (it carries the seal of art_diffusion.data.row_store) is logged once
and every header is checked again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from art_diffusion.data import row_store
from art_diffusion.data.images import REASONS, BadImage, check_header
from art_diffusion.data.listing import SourceFile
from art_diffusion.data.pool import parallel_map
from art_diffusion.storage import atomic_write, optional_write, read_text

log = logging.getLogger(__name__)

Verdict = tuple[str, str] | None  # (reason, detail) of a refused file, None for a usable header

_VERSION = 2  # bump when check_header changes what it refuses


def _check_one(job: tuple[str, int, int]) -> Verdict:
    path, max_pixels, min_size = job
    try:
        check_header(path, max_pixels, min_size)
    except BadImage as exc:
        return exc.reason, exc.detail
    return None


def cache_file(cache_dir: Path, roots: list[str], max_pixels: int, min_size: int) -> Path:
    key = json.dumps([_VERSION, sorted(os.path.abspath(r) for r in roots), max_pixels, min_size])
    return cache_dir / "headers" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _is_entry(entry) -> bool:
    """``[size, mtime_ns, verdict]`` as check_headers writes it: a verdict is None or ``[reason, detail]``."""
    if not (isinstance(entry, list) and len(entry) == 3 and all(type(n) is int for n in entry[:2])):
        return False
    verdict = entry[2]
    return verdict is None or (isinstance(verdict, list) and len(verdict) == 2 and verdict[0] in REASONS
                               and isinstance(verdict[1], str))


def _load(path: Path) -> dict[str, list]:
    """The cache's ``{path: [size, mtime_ns, verdict]}``, or {} when there is none; a cache that is not as
    check_headers wrote it (unreadable, of another form, or edited: the seal) is logged once and not used."""
    try:
        cache, seal_wrong = row_store.unsealed(path.name, read_text(path, row_store.MAX_MANIFEST_BYTES,
                                                                       errors="surrogateescape"))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        cache, seal_wrong = None, f"{type(exc).__name__}: {exc}"
    why = seal_wrong if cache is None else row_store.mismatch(cache, {"files": dict})
    if why is None and not all(_is_entry(entry) for entry in cache["files"].values()):
        why = "an entry is not [size, mtime_ns, verdict]"
    why = why or seal_wrong
    if why is None:
        return cache["files"]
    log.warning("The header cache %s is damaged, edited or an older version's (%s): every header is checked again",
                path, why)
    return {}


def check_headers(
    files: list[SourceFile], max_pixels: int, min_size: int, cache: Path | None, workers: int
) -> dict[str, Verdict]:
    """``{path: verdict}`` for every file; only files unknown to ``cache`` (or changed since) are opened."""
    known = _load(cache) if cache else {}
    verdicts: dict[str, Verdict] = {}
    todo = []
    for f in files:
        entry = known.get(f.path)
        if entry and entry[:2] == [f.size, f.mtime_ns]:
            verdicts[f.path] = tuple(entry[2]) if entry[2] else None
        else:
            todo.append(f)
    jobs = [(f.path, max_pixels, min_size) for f in todo]
    for f, verdict in zip(todo, parallel_map(_check_one, jobs, workers, "Checking image headers")):
        verdicts[f.path] = verdict
    if cache and (todo or len(known) != len(files)):
        # Concurrent runs (DDP ranks) each write a complete file; the last rename wins. Only a cache: a disk that is
        # full or read-only loses the time it saves, never the run.
        with optional_write(f"the header cache {cache} (the next run checks every header again)"):
            entries = {f.path: [f.size, f.mtime_ns, verdicts[f.path]] for f in files}
            atomic_write(cache, row_store.sealed(cache.name, {"files": entries}))
    return verdicts
