"""What the command-line tools are pointed at: input image files (a file, a folder or a glob) and a device."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from art_diffusion import ConfigError, MissingPathError
from art_diffusion.data.images import IMAGE_EXTENSIONS
from art_diffusion.data.listing import list_images


@dataclass
class InputFile:
    path: Path
    name: str  # relative name without extension, used for the output files (keeps sub-folders apart)


def resolve_device(device: str) -> torch.device:
    """``auto`` = the first GPU when there is one, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA GPU is visible; use device=cpu or device=auto.")
    return resolved


def find_inputs(spec: str) -> list[InputFile]:
    """The files ``spec`` names: one image, every image under a directory (recursively), or a glob's matches."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [InputFile(path, path.stem)]
    if path.is_dir():
        files = list_images(path)
        base = path
    elif glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
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
    return [InputFile(p, str(p.relative_to(base).with_suffix(""))) for p in files]


def literal_prefix(parts: Sequence[str]) -> Iterator[str]:
    """The leading path parts of a glob that hold no wildcard."""
    for part in parts:
        if glob.has_magic(part):
            return
        yield part
