"""The start-up check of the uncached pipeline: every file's header, in parallel, remembered by path, size and mtime.

Opening a header finds most bad files (HTML pages, empty files, bombs, tiny images) for a few KB of reading,
so a clear error can stop a hopeless run before training. Damage deeper in a file (truncated or corrupt pixel
data) is found later, lazily, by the DataLoader worker that decodes it. A second run over the same folder only
re-checks files whose size or mtime changed: its start-up is one directory walk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from art_diffusion.data.images import BadImage, check_header
from art_diffusion.data.listing import SourceFile
from art_diffusion.data.pool import parallel_map
from art_diffusion.storage import atomic_write, optional_write

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


def _load(path: Path) -> dict[str, list]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent or half-written by a killed run: check again
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
            atomic_write(cache, json.dumps({f.path: [f.size, f.mtime_ns, verdicts[f.path]] for f in files}))
    return verdicts
