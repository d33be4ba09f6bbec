"""What the command-line tools are pointed at: input image files (a file, a folder or a glob) and a device."""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from art_diffusion import ConfigError, MissingPathError
from art_diffusion.data.images import IMAGE_EXTENSIONS
from art_diffusion.data.listing import list_images

log = logging.getLogger(__name__)

@dataclass
class InputFile:
    path: Path
    name: str  # relative name without extension, used for the output files (keeps sub-folders apart); inputs
    # whose names would collide (a.jpg and a.png) keep their extension instead: a.jpg, a.png (see output_names)


def resolve_device(device: str) -> torch.device:
    """``auto`` = the first GPU when there is one, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(str(device))
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device!r} is not a device the tools run on: use device=auto, cpu, cuda, cuda:N "
                          "or mps.")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA GPU is visible; use device=cpu or device=auto.")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(f"device={device} but only {torch.cuda.device_count()} CUDA GPU(s) are visible; use "
                          "device=cuda:0 or device=auto.")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={device} but MPS is not available here; use device=cpu or device=auto.")
    return resolved


def find_inputs(spec: str) -> list[InputFile]:
    """The files ``spec`` names: one image, every image under a directory (recursively), or a glob's matches."""
    if not spec.strip():  # "" would be the working directory, searched through
        raise ConfigError("input='' names nothing: pass an image file, a directory of images, or a quoted glob such "
                          "as input='photos/*.jpg'.")
    path = Path(spec).expanduser()
    if path.is_file():
        return [InputFile(path, path.stem)]
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"input={spec} is not a regular file or a directory (a named pipe, socket or device): the images are "
            "read from files. Pass an image file, a directory of images, or a quoted glob such as "
            "input='photos/*.jpg'."
        )
    if path.is_dir():
        files = list_images(path)
        base = path
    elif glob.has_magic(spec):
        try:
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        except RecursionError:  # Python's glob recurses into each folder: a tree thousands of folders deep
            raise ConfigError(f"input={spec}: the folders under the glob nest too deep for Python's glob to search. "
                              "Pass the folder itself (input=DIR): it is walked at any depth.") from None
        base = Path(*literal_prefix(path.parts))  # output names are relative to the glob's fixed prefix
    else:
        raise MissingPathError(
            f"input={spec}: no such file or directory. Pass an image file, a directory of images, or a quoted glob "
            "such as input='photos/*.jpg'."
        )
    if not files and path.is_dir():
        raise MissingPathError(f"input={spec}: no image files in this directory ({', '.join(IMAGE_EXTENSIONS)}).")
    if not files:
        raise MissingPathError(f"input={spec}: the glob matches no files.")
    relative = [p.relative_to(base) for p in files]
    return [InputFile(p, name) for p, name in zip(files, output_names(relative))]


def output_names(relative: Sequence[Path]) -> list[str]:
    """The output name of each input (its relative path without the extension), distinct by construction.

    Inputs sharing a stem in one folder (``a.jpg`` and ``a.png``) would overwrite each other's ``a.png``: those
    keep their extension in the name instead (``a.jpg``, ``a.png``, so ``a.jpg.png`` and ``a.png.png`` are
    written), and a warning says so. Names are compared case-insensitively (``A.jpg`` and ``a.png`` collide on
    macOS and Windows disks). Deterministic: the same inputs give the same names on every call.
    """
    names = [str(p.with_suffix("")) for p in relative]
    taken: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        taken.setdefault(name.casefold(), []).append(i)
    clashes = [group for group in taken.values() if len(group) > 1]
    for group in clashes:
        for i in group:
            names[i] = str(relative[i])
    if clashes:
        log.warning("Inputs sharing a name keep their extension in the output names: %s",
                    "; ".join(", ".join(f"{relative[i]} -> {names[i]}.png" for i in group) for group in clashes))
    seen: set[str] = set()
    for i, name in enumerate(names):  # a renamed a.jpg against an input a.jpg.png: number what still clashes
        unique, n = name, 1
        while unique.casefold() in seen:
            unique, n = f"{name}~{n}", n + 1
        seen.add(unique.casefold())
        names[i] = unique
    return names


def literal_prefix(parts: Sequence[str]) -> Iterator[str]:
    """The leading path parts of a glob that hold no wildcard."""
    for part in parts:
        if glob.has_magic(part):
            return
        yield part
