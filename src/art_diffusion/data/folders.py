"""What a data folder must be, and the messages when it is not: a folder (not a file, not a broken link) holding
image files, a second folder whose classes data.root has, and the oddities the start-up summary mentions."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from art_diffusion import DataError, MissingPathError
from art_diffusion.data.listing import Listing, list_image_folder
from art_diffusion.data.report import printable
from art_diffusion.storage import file_identity

log = logging.getLogger(__name__)
EXPECTED_LAYOUT = """\
Expected an ImageFolder, one sub-folder per class, e.g. the Kaggle "Art Images" training_set:
    {root}/
        drawings/   *.jpg
        engraving/  *.jpg
        iconography/ ...
        painting/   ...
        sculpture/  ...
Point data.root at such a folder, or try the built-in demo data: python scripts/train.py experiment=demo"""


def check_image_folder(root: str, key: str = "data.root") -> Path:
    """``root`` as a Path if it is a folder; else one message saying what it is (a file, nothing) and what to pass."""
    path = Path(root).expanduser()
    if path.is_file():
        # a file in a class folder (no sub-folders beside it): the ImageFolder is one level further up
        folder = path.parent if any(p.is_dir() for p in path.parent.iterdir()) else path.parent.parent
        raise DataError(f"{key}={str(path)!r} is a file, not a folder. Pass the folder that holds the class "
                        f"sub-folders, e.g. {key}={str(folder)!r}.\n" + EXPECTED_LAYOUT.format(root=folder))
    if not path.is_dir():
        what = "is a broken symbolic link" if path.is_symlink() else "does not exist"
        raise MissingPathError(f"{key}={str(path)!r} {what}.\n" + EXPECTED_LAYOUT.format(root=path))
    return path


def list_checked_folder(root: str, key: str = "data.root") -> Listing:
    """The listing of ``root``; one message when it is not an image folder. Broken links and loops are logged."""
    path = check_image_folder(root, key)
    listing = list_image_folder(path)
    if not listing.files:
        raise DataError(f"No image files under {key}={str(path)!r}{describe_oddities([listing])}.\n"
                        + EXPECTED_LAYOUT.format(root=path))
    if listing.empty_classes:
        log.warning("Leaving out the class folders without an image file under %s: %s (a class needs images to be "
                    "learnt; add some, or remove the folders)", key, ", ".join(printable(c) for c in
                                                                  listing.empty_classes))
    for link in listing.broken_links:
        log.warning("Skipping %s: a broken symbolic link (to %s)", printable(link), printable(os.readlink(link)))
    for folder in listing.outputs:
        log.warning("Not reading %s: a folder this project's commands wrote (a run dir or a tool's output_dir), "
                    "whose images are outputs, not data; move it out of %s, or name it as %s to train on it",
                    printable(folder), key, key)
    for folder in listing.loops:
        log.warning("Not following %s: it links to a folder already listed (a symlink loop or a duplicate)",
                    printable(folder))
    return listing


def map_classes(listing: Listing, classes: list[str], key: str) -> Listing:
    """Relabel a second folder's files (``key``) by class name, as in data.root's ``classes``; refuse a class
    data.root lacks."""
    extra = [name for name in listing.classes if name not in classes]
    if extra:
        raise DataError(
            f"{key} has class folders that data.root lacks: {extra} (data.root has {classes}). Labels are "
            f"matched by folder name: rename or remove those folders, or leave {key} unset to validate on a "
            "split of data.root."
        )
    missing = [name for name in classes if name not in listing.classes]
    if missing:
        log.warning("%s has no folder for the classes %s: they are not validated", key, missing)
    label = {name: classes.index(name) for name in listing.classes}
    listing.files = [f._replace(label=label[listing.classes[f.label]]) for f in listing.files]
    return listing


def check_held_out(train: Listing, held_out: Listing, key: str) -> None:
    """Refuse a held-out folder (``key``) holding data.root's own files: the same folder, one inside the other, links
    or hard links to the same files. Its scores would measure how well the model remembers its training images."""
    training = {file_identity(f.path) for f in train.files} - {None}
    shared = [f.path for f in held_out.files if file_identity(f.path) in training]
    if shared:
        raise DataError(
            f"{key}: {len(shared)} of its {len(held_out.files)} image files are data.root's too (e.g. "
            f"{printable(shared[0])}, by path or by link), so validation would score images the model trains on. "
            f"Pass a {key} that shares no file with data.root, or leave it unset to hold out a split of data.root."
        )


def describe_oddities(listings: list[Listing]) -> str:
    """What the summary line adds about the folders: ignored files, empty classes, broken links, loops."""
    ignored = [p for listing in listings for p in listing.ignored]
    empty = [c for listing in listings for c in listing.empty_classes]
    text = ""
    if ignored:
        names = sorted({os.path.basename(p) for p in ignored})
        text += f"; ignored {len(ignored)} non-image files ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
    if empty:
        text += f"; empty class folders (left out of the classes): {', '.join(empty)}"
    broken = [printable(p) for listing in listings for p in listing.broken_links]
    if broken:
        text += f"; broken symbolic links skipped: {', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}"
    outputs = [printable(p) for listing in listings for p in listing.outputs]
    if outputs:
        text += f"; folders this project's commands wrote (not data): {', '.join(outputs[:3])}"
    loops = [printable(p) for listing in listings for p in listing.loops + listing.unreadable]
    if loops:
        text += f"; folders not followed (symlink loops, duplicate links, unreadable): {', '.join(loops[:3])}"
    return text
