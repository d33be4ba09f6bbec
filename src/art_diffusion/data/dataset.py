"""The two datasets: files decoded on demand (a bad one is reported and replaced), or rows of the pixel cache.

A sample is ``(pixels, label, events)``: pixels a uint8 CHW tensor, events what producing it cost, as a dict
``{"decoded": files decoded, "skipped": [(path, reason, detail), ...]}``. :func:`collate` turns samples into the
batch ``(images, labels, events)`` with images float in [0, 1]; with the target-feature store a training sample
has a fourth item, its stored features, and the batch is ``(images, labels, events, features)``. Events travel
inside the batch because that is the one channel from a DataLoader worker process back to the trainer;
ArtDataModule takes them out again in ``on_before_batch_transfer``, so the LightningModule sees
``(images, labels[, features])``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from art_diffusion import DataError
from art_diffusion.data import feature_store
from art_diffusion.data.images import BadImage, load_rgb
from art_diffusion.data.listing import SourceFile

Events = dict


def collate(samples: list[tuple]) -> tuple:
    pixels, labels, events, *features = zip(*samples)
    images = torch.stack(pixels).float().div_(255)  # one conversion per batch instead of one per image
    merged = {"decoded": sum(e["decoded"] for e in events), "skipped": [s for e in events for s in e["skipped"]]}
    # stored features are (h, w, C) rows: stacked as they are, then viewed as (N, C, h, w) channels-last, no copy
    return images, torch.tensor(labels), merged, *(torch.stack(f).movedim(-1, 1) for f in features)


def _maybe_flip(pixels: torch.Tensor, hflip: bool) -> torch.Tensor:
    # torch's RNG: seeded per DataLoader worker by Lightning (seed_everything(workers=True)), so runs repeat.
    return pixels.flip(-1) if hflip and torch.rand(()) < 0.5 else pixels


class DecodedImages(Dataset):
    """Decodes each file when asked. A file that fails is reported in the sample's events and the next file is
    served instead, so batches keep their size; this worker then skips it without decoding again."""

    def __init__(self, files: list[SourceFile], image_size: int, max_pixels: int, min_size: int,
                 hflip: bool = False) -> None:
        if not files:
            raise ValueError("DecodedImages needs at least one file")
        self.files, self.image_size, self.hflip = files, image_size, hflip
        self.max_pixels, self.min_size = max_pixels, min_size
        self._bad: set[str] = set()  # per worker process

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, Events]:
        events: Events = {"decoded": 0, "skipped": []}
        for offset in range(len(self.files)):
            file = self.files[(index + offset) % len(self.files)]
            if file.path in self._bad:
                continue
            events["decoded"] += 1
            try:
                pixels = load_rgb(file.path, self.image_size, self.max_pixels, self.min_size)
            except BadImage as exc:
                self._bad.add(file.path)
                events["skipped"].append((file.path, exc.reason, exc.detail))
                continue
            pixels = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
            return _maybe_flip(pixels, self.hflip), file.label, events
        raise DataError(
            f"None of the {len(self.files)} files of this split could be decoded (e.g. {self.files[0].path}: "
            f"{events['skipped'][:1]}). Check the files, or run once with data.cache=true for a full report."
        )


class CachedImages(Dataset):
    """Rows of the pixel cache (see pixel_cache.py): a memory-mapped read, no decoding, no source file opened; with
    ``features`` (a target-feature store, see feature_store.py, never with ``hflip``) each sample also carries the
    same row of that store as an (h, w, C) tensor in the dtype the step computes features in."""

    def __init__(self, store: str | Path, rows: list[int], labels: list[int], hflip: bool = False,
                 features: str | Path | None = None) -> None:
        if not rows:
            raise ValueError("CachedImages needs at least one row")
        if hflip and features is not None:
            raise ValueError("CachedImages: stored features are of the unflipped images; hflip needs features=None")
        self.store, self.rows, self.labels, self.hflip = str(store), rows, labels, hflip
        self.features = None if features is None else str(features)
        self._pixels: np.ndarray | None = None  # opened lazily in each worker process
        self._features: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None, "_features": None}  # pickling a memory map would copy the array

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, Events]:
        if self._pixels is None:
            self._pixels = np.load(self.store, mmap_mode="r")
        pixels = torch.from_numpy(np.array(self._pixels[self.rows[index]]))  # a copy out of the map, CHW
        sample = (_maybe_flip(pixels, self.hflip), self.labels[index], {"decoded": 0, "skipped": []})
        if self.features is None:
            return sample
        if self._features is None:
            self._features = np.load(self.features, mmap_mode="r")
        return *sample, feature_store.as_tensor(np.array(self._features[self.rows[index]]))
