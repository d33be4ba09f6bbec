"""The project's one image lister: an ImageFolder (class sub-folders) or any folder of images, by names and stat()
only (no file is opened, so start-up costs one directory walk). Hidden entries are skipped, extensions match in any
case."""

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


def _walk(folder: str, label: int, listing: Listing) -> None:
    """Add the image files under ``folder`` (recursively, hidden entries skipped), in file-system order.

    Written for speed (it is most of a second run's start-up): one scandir per folder, one stat per file.
    """
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_dir():
            _walk(entry.path, label, listing)
        elif not name.lower().endswith(IMAGE_EXTENSIONS):
            listing.ignored.append(entry.path)
        else:
            try:
                st = entry.stat()  # follows links, like the decoder will
                listing.files.append(SourceFile(entry.path, label, st.st_size, st.st_mtime_ns))
            except OSError:  # a dangling link: listed anyway, so decoding reports it as unreadable
                listing.files.append(SourceFile(entry.path, label, -1, 0))


def list_image_folder(root: str | Path) -> Listing:
    """Every image file under ``root/<class>/`` (any depth, extensions in any case), sorted, and the class names.

    Hidden files and folders (.DS_Store, ._x.jpg from macOS, .ipynb_checkpoints) are skipped; other files without
    an image extension (Thumbs.db, notes.txt) are listed in ``ignored`` so the summary can mention them.
    """
    root = Path(root)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    listing = Listing(files=[], classes=classes)
    for label, name in enumerate(classes):
        before = len(listing.files)
        _walk(str(root / name), label, listing)
        if len(listing.files) == before:
            listing.empty_classes.append(name)
        listing.files[before:] = sorted(listing.files[before:])  # by path (unique): the same order on any file system
    listing.ignored.sort()
    return listing


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder``, at any depth and whatever the layout, sorted (the same walk as above)."""
    listing = Listing(files=[], classes=[])
    _walk(str(folder), 0, listing)
    return sorted(Path(f.path) for f in listing.files)
