"""The project's one image lister: an ImageFolder (class sub-folders) or any folder of images, by names and stat()
only (no file is opened, so start-up costs one directory walk). Hidden entries are skipped, extensions match in any
case, symlinks are followed with each folder walked once (a loop is reported, not recursed into), and a folder this
project's commands wrote (a training run's dir, a tool's ``output_dir``) below the folder given is not walked: its
progress grids and reconstructions never become training data or inputs because they were written inside them."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from art_diffusion.data.images import LISTED_EXTENSIONS
from art_diffusion.run.run_dir import OWNER_LOCK
from art_diffusion.storage.files import file_identity
from art_diffusion.storage.outputs import RECORD_FILE

log = logging.getLogger(__name__)

#: A file that marks a folder one of this project's commands wrote: a training run's lock, a tool's output record
OUTPUT_MARKERS = frozenset({OWNER_LOCK, RECORD_FILE})


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
    empty_classes: list[str] = field(default_factory=list)  # class folders without an image: not in ``classes``
    broken_links: list[str] = field(default_factory=list)  # symlinks to nothing (a class folder among them)
    loops: list[str] = field(default_factory=list)  # linked folders already listed (a symlink loop or a duplicate)
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed (permissions)
    outputs: list[str] = field(default_factory=list)  # folders a command of this project wrote (OUTPUT_MARKERS)


def _walk(folder: str, label: int, listing: Listing, seen: set[tuple[int, int]], given: bool = False) -> None:
    """Add the image files under ``folder`` (at any depth, hidden entries skipped); a folder holding one of
    :data:`OUTPUT_MARKERS` is recorded in ``listing.outputs`` instead, unless it is the one ``given``.

    Symlinks are followed, each folder once: ``seen`` holds the (st_dev, st_ino) of every folder walked, so a link
    back up the tree (a loop) or a second link to a folder is recorded in ``listing.loops`` instead of walked again.
    A stack, not recursion: a tree nested thousands of folders deep is walked like any other. Written for speed (it
    is most of a second run's start-up): one scandir per folder, one stat per file.
    """
    folders = [(folder, given)]
    while folders:
        current, named = folders.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            listing.unreadable.append(current)
            continue
        if not named and any(entry.name in OUTPUT_MARKERS for entry in entries):
            listing.outputs.append(current)
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            if entry.is_dir():
                key = file_identity(entry.path)
                if key in seen:
                    listing.loops.append(entry.path)
                    continue
                seen.add(key)
                folders.append((entry.path, False))
            elif not name.lower().endswith(LISTED_EXTENSIONS):
                (listing.broken_links if _is_broken_link(entry) else listing.ignored).append(entry.path)
            else:
                _add_file(entry, label, listing)


def _add_file(entry: os.DirEntry, label: int, listing: Listing) -> None:
    try:
        st = entry.stat()  # follows links, like the decoder will
    except OSError:  # a dangling link: listed anyway, so decoding reports it as unreadable
        listing.files.append(SourceFile(entry.path, label, -1, 0))
        return
    if not stat.S_ISREG(st.st_mode):  # a named pipe (opening it would wait forever), socket, device
        listing.ignored.append(entry.path)
    else:
        listing.files.append(SourceFile(entry.path, label, st.st_size, st.st_mtime_ns))


def _is_broken_link(entry: os.DirEntry) -> bool:
    return entry.is_symlink() and not os.path.exists(entry.path)


def list_image_folder(root: str | Path) -> Listing:
    """Every image file under ``root/<class>/`` (any depth, extensions in any case), sorted, and the class names.

    Hidden files and folders (.DS_Store, ._x.jpg from macOS, .ipynb_checkpoints) are skipped; other files without
    an image extension (Thumbs.db, notes.txt) are listed in ``ignored`` so the summary can mention them; a class
    folder that is a broken symlink is in ``broken_links``. Class folders without an image file are left out of
    ``classes`` (labels stay 0..n-1 over the classes that have images) and listed in ``empty_classes``.
    """
    root = Path(root)
    entries = [entry for entry in os.scandir(root) if not entry.name.startswith(".")]
    classes = sorted(entry.name for entry in entries if entry.is_dir())
    listing = Listing(files=[], classes=classes)
    listing.broken_links = sorted(entry.path for entry in entries if _is_broken_link(entry))
    seen = {file_identity(str(root))}
    for label, name in enumerate(classes):
        before = len(listing.files)
        key = file_identity(str(root / name))
        if key in seen:  # a class folder linked to another one (or to root itself)
            listing.loops.append(str(root / name))
        else:
            seen.add(key)
            _walk(str(root / name), label, listing, seen)
        if len(listing.files) == before:
            listing.empty_classes.append(name)
        listing.files[before:] = sorted(listing.files[before:])  # by path (unique): the same order on any file system
    if listing.empty_classes:  # a class without an image is no class: no label, no grid, nothing to learn
        kept = [name for name in classes if name not in listing.empty_classes]
        label = {classes.index(name): new for new, name in enumerate(kept)}
        listing.files = [f._replace(label=label[f.label]) for f in listing.files]
        listing.classes = kept
    listing.ignored.sort()
    return listing


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder``, at any depth and whatever the layout, sorted (the same walk as above)."""
    listing = Listing(files=[], classes=[])
    _walk(str(folder), 0, listing, {file_identity(str(folder))}, given=True)
    for output in listing.outputs:
        log.warning("Not reading %s: this project's commands wrote it (outputs are not inputs); name it to read it",
                    output)
    return sorted(Path(f.path) for f in listing.files)
