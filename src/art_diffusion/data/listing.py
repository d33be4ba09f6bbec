"""Listing an ImageFolder: names and stat() only, no file is opened, so start-up costs one directory walk."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from art_diffusion.data.images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class SourceFile:
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


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:  # a dangling link: listed anyway, so decoding reports it as unreadable
        return -1, 0


def list_image_folder(root: str | Path) -> Listing:
    """Every image file under ``root/<class>/`` (any depth, extensions in any case), sorted, and the class names.

    Hidden files and folders (.DS_Store, ._x.jpg from macOS, .ipynb_checkpoints) are skipped; other files without
    an image extension (Thumbs.db, notes.txt) are listed in ``ignored`` so the summary can mention them.
    """
    root = Path(root)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    listing = Listing(files=[], classes=classes)
    for label, name in enumerate(classes):
        found = 0
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                path = os.path.join(dirpath, filename)
                if filename.startswith("."):
                    continue
                if not filename.lower().endswith(IMAGE_EXTENSIONS):
                    listing.ignored.append(path)
                    continue
                listing.files.append(SourceFile(path, label, *_stat(path)))
                found += 1
        if not found:
            listing.empty_classes.append(name)
    listing.files.sort(key=lambda f: (f.label, f.path))
    return listing
