"""An ImageFolder-style dataset that survives broken files: each is reported once and replaced by another sample."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from art_diffusion.data.images import IMAGE_EXTENSIONS, BadImage, load_rgb

log = logging.getLogger(__name__)


def list_image_folder(root: str | Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) for every image file under ``root/<class>/``, sorted, and the class names.

    Only names are listed (no file is opened), so start-up costs one directory walk.
    """
    root = Path(root)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    samples = []
    for index, name in enumerate(classes):
        for dirpath, _, filenames in sorted(os.walk(root / name, followlinks=True)):
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS) and not filename.startswith("."):
                    samples.append((os.path.join(dirpath, filename), index))
    return samples, classes


class ImageFiles(Dataset):
    """``(image, label)`` with image a float CHW tensor in [0, 1] of side ``image_size``."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int) -> None:
        if not samples:
            raise ValueError("ImageFiles needs at least one sample")
        self.samples = samples
        self.image_size = image_size
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # A bad file must not crash a long run nor shrink the batch: serve the next usable sample instead.
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                pixels = load_rgb(path, self.image_size)
            except BadImage as exc:
                self._report(path, str(exc))
                continue
            return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255), label
        raise RuntimeError(f"None of the {len(self.samples)} images could be decoded; see the warnings above.")

    def _report(self, path: str, reason: str) -> None:
        if path not in self._reported:
            self._reported.add(path)
            log.warning("Skipping unreadable image %s (%s)", path, reason)
