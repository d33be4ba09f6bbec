"""Listing an ImageFolder: names and stat() only, no file is opened, so start-up costs one directory walk."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from art_diffusion.data.images import IMAGE_EXTENSIONS


class SourceFile(NamedTuple):  # a tuple, not a dataclass: a million of them are made at start-up
    """One image file; ``size`` and ``mtime_ns`` key every cache, so an edited file is decoded again."""

    path: str
    label: int
    size: int
    mtime_ns: int


@dataclass
class Listing:
    files: list[SourceFile]
    classes: list[str]
    ignored: list[str] = field(default_factory=list)  # files without an image extension (.DS_Store, notes.txt)
    empty_classes: list[str] = field(default_factory=list)


def _stat(entry: os.DirEntry) -> tuple[int, int]:
    try:
        st = entry.stat()  # follows links, like the decoder will
        return st.st_size, st.st_mtime_ns
    except OSError:  # a dangling link: listed anyway, so decoding reports it as unreadable
        return -1, 0


def _walk(folder: str, label: int, listing: Listing) -> int:
    """Add the image files under ``folder`` (recursively, hidden entries skipped); returns how many."""
    found = 0
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += _walk(entry.path, label, listing)
        elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            listing.ignored.append(entry.path)
        else:
            listing.files.append(SourceFile(entry.path, label, *_stat(entry)))
            found += 1
    return found


def list_image_folder(root: str | Path) -> Listing:
    """Every image file under ``root/<class>/`` (any depth, extensions in any case), sorted, and the class names.

    Hidden files and folders (.DS_Store, ._x.jpg from macOS, .ipynb_checkpoints) are skipped; other files without
    an image extension (Thumbs.db, notes.txt) are listed in ``ignored`` so the summary can mention them.
    """
    root = Path(root)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    listing = Listing(files=[], classes=classes)
    for label, name in enumerate(classes):
        if not _walk(str(root / name), label, listing):
            listing.empty_classes.append(name)
    return listing
