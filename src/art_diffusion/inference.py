"""Reconstructing image files with a trained network: finding inputs, decoding, padding, batching.

Two size modes: ``train`` resizes every image to the training size (what the article does), ``native`` keeps the
full resolution: the network is fully convolutional, so the image is padded to a multiple of 8, reconstructed,
and cropped back.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from art_diffusion.data.images import IMAGE_EXTENSIONS, BadImage, load_rgb
from art_diffusion.model import DOWNSAMPLING_FACTOR

log = logging.getLogger(__name__)

SIZE_MODES = ("train", "native")


@dataclass
class InputFile:
    path: Path
    name: str  # relative name without extension, used for the output files (keeps sub-folders apart)


@dataclass
class Reconstruction:
    file: InputFile
    image: Tensor | None = None  # CHW in [0, 1], at the resolution the network saw
    reconstruction: Tensor | None = None
    error: str | None = None  # why the file was skipped


def resolve_device(device: str) -> torch.device:
    """``auto`` = the first GPU when there is one, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device} but no CUDA GPU is visible; use device=cpu or device=auto.")
    return resolved


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_inputs(spec: str) -> list[InputFile]:
    """The files ``spec`` names: one image, every image under a directory (recursively), or a glob's matches."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [InputFile(path, path.stem)]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
        base = path
    elif glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        base = Path(*_takewhile_literal(path.parts))  # output names are relative to the glob's fixed prefix
    else:
        raise FileNotFoundError(
            f"input={spec}: no such file or directory. Pass an image file, a directory of images, or a quoted glob "
            "such as input='photos/*.jpg'."
        )
    if not files and path.is_dir():
        raise FileNotFoundError(f"input={spec}: no image files in this directory ({', '.join(IMAGE_EXTENSIONS)}).")
    if not files:
        raise FileNotFoundError(f"input={spec}: the glob matches no files.")
    return [InputFile(p, str(p.relative_to(base).with_suffix(""))) for p in files]


def _takewhile_literal(parts: Sequence[str]) -> Iterator[str]:
    for part in parts:
        if glob.has_magic(part):
            return
        yield part


def pad_to_multiple(x: Tensor, multiple: int = DOWNSAMPLING_FACTOR, mode: str = "reflect") -> Tensor:
    """Pad the bottom and right of an NCHW batch so both sides are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not (pad_h or pad_w):
        return x
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"  # reflection needs the image to be larger than the padding
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class Reconstructor:
    """Decodes files the way the model expects and runs the network on batches of them."""

    def __init__(
        self,
        net: nn.Module,
        image_size: int,
        size: str = "train",
        pad_mode: str = "reflect",
        device: torch.device | str = "cpu",
    ) -> None:
        if size not in SIZE_MODES:
            raise ValueError(f"size={size!r}: choose one of {SIZE_MODES}.")
        self.net = net.to(device).eval()
        self.image_size = image_size
        self.size = size
        self.pad_mode = pad_mode
        self.device = torch.device(device)

    def load(self, path: Path) -> Tensor:
        """CHW float in [0, 1]; raises :class:`BadImage` for a file that cannot be decoded."""
        pixels = load_rgb(path, self.image_size if self.size == "train" else None)
        return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """Reconstructions of an NCHW batch in [0, 1], same size as the batch."""
        h, w = images.shape[-2:]
        batch = pad_to_multiple(images.to(self.device), DOWNSAMPLING_FACTOR, self.pad_mode)
        return self.net(batch)[..., :h, :w].clamp(0, 1)

    def run(self, files: Sequence[InputFile], batch_size: int) -> Iterator[Reconstruction]:
        """One :class:`Reconstruction` per file, in order; undecodable files come back with ``error`` set."""
        for start in range(0, len(files), batch_size):
            chunk = [Reconstruction(f) for f in files[start:start + batch_size]]
            for item in chunk:
                try:
                    item.image = self.load(item.file.path)
                except BadImage as exc:
                    item.error = str(exc)
                    log.warning("Skipping unreadable image %s (%s)", item.file.path, exc)
            # native sizes differ between files: batch together only those of the same shape
            by_shape: dict[tuple[int, ...], list[Reconstruction]] = {}
            for item in chunk:
                if item.image is not None:
                    by_shape.setdefault(tuple(item.image.shape), []).append(item)
            for group in by_shape.values():
                outputs = self(torch.stack([item.image for item in group])).cpu()
                for item, output in zip(group, outputs):
                    item.reconstruction = output
            yield from chunk
