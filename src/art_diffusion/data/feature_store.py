"""``data.feature_store``: the perceptual loss's VGG features of every cached image, computed once and read back.

Without augmentation (``data.hflip=false``, the article's setting) a training image's target features are the same
every epoch, yet the loss computed them every step: a VGG16 forward pass per image, ~30 % of a step's arithmetic.
The store holds them in the dtype the training step computes them in (bf16 under bf16 autocast, fp32 in fp32
training, so a stored target is the step's own number in every precision) as
``<cache_dir>/features/<slot>-<content>.npy`` (N x h x w x C; bf16 as its bits in int16, which numpy lacks; row i =
row i of the pixel cache it was computed from, so bad rows are never served). ``content`` hashes the
pixel store's name (itself a hash of every path, size and mtime and the image size) with the extractor's identity
(a hash of the VGG weights, the layer, the precision); ``slot`` the pixel store's slot with the layer and precision.
Locking, atomic writes, the check on opening (header and manifest exactly as built, the manifest naming this pixel
store, extractor and shape; else logged once and rebuilt) and the removal of stale stores are
art_diffusion.data.row_store's.

The features are computed by the LightningModule's own loss (:class:`FeatureSpec`), the same code and precision as
the training step, so a stored target equals the one the step would compute. Validation and test never use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from art_diffusion.data import row_store

_VERSION = 1  # bump when the layout or the way features are computed changes
_BATCH = 32  # images per VGG pass while building


@dataclass(frozen=True)
class FeatureSpec:
    """What a LightningModule offers the data module: how it computes a target's features, and what they depend on."""

    extract: Callable[[torch.Tensor], torch.Tensor]  # [0, 1] images (N, 3, H, W) -> features (N, C, h, w)
    identity: dict  # everything the features depend on besides the pixels (weights digest, layer, precision)


#: how each dtype the step may compute features in is kept on disk (numpy has no bf16: its bits, as int16)
ON_DISK = {torch.bfloat16: np.dtype(np.int16), torch.float16: np.dtype(np.float16),
           torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_IN_MEMORY = {disk: dtype for dtype, disk in ON_DISK.items()}


@dataclass(frozen=True)
class Layout:
    """One image's features as the step computes them: ``(h, w, C)`` and the dtype (a key of :data:`ON_DISK`)."""

    shape: tuple[int, int, int]
    dtype: torch.dtype

    def bytes_for(self, num_rows: int) -> int:
        return num_rows * int(np.prod(self.shape)) * ON_DISK[self.dtype].itemsize


def layout(extract: Callable[[torch.Tensor], torch.Tensor], image_size: int) -> Layout:
    """The features' :class:`Layout`, from one pass over a black image."""
    features = extract(torch.zeros(1, 3, image_size, image_size))
    c, h, w = features.shape[1:]
    return Layout((h, w, c), features.dtype)


def as_tensor(row: np.ndarray) -> torch.Tensor:
    """A row read from a store, as the tensor the step would have computed (bf16 bits viewed as bf16)."""
    return torch.from_numpy(row).view(_IN_MEMORY[row.dtype])


def store_path(cache_dir: Path, pixel_store: Path, spec: FeatureSpec) -> Path:
    same = {k: v for k, v in spec.identity.items() if k != "weights"}  # a change of weights replaces the store
    slot = row_store.digest([pixel_store.stem.split("-")[0], same])
    content = row_store.digest([_VERSION, pixel_store.name, spec.identity])
    return cache_dir / "features" / f"{slot}-{content}.npy"


def open_or_build(path: Path, pixel_store: Path, spec: FeatureSpec, features: Layout,
                  log: Callable[[str], None]) -> float | None:
    """The store at ``path`` made complete (built from the pixel store if needed); seconds spent building or None."""
    pixels = np.load(pixel_store, mmap_mode="r")
    feature_shape, on_disk = features.shape, ON_DISK[features.dtype]

    def fill(write: row_store.Writer) -> dict:
        start = time.perf_counter()
        for first in range(0, len(pixels), _BATCH):
            batch = torch.from_numpy(np.array(pixels[first:first + _BATCH])).float().div_(255)
            computed = spec.extract(batch)
            if computed.dtype != features.dtype:  # the step's precision is fixed for a run: a bug if it moved
                raise RuntimeError(f"features computed in {computed.dtype}, the store is of {features.dtype}")
            rows = computed.permute(0, 2, 3, 1).contiguous().cpu()
            write((rows.view(torch.int16) if features.dtype == torch.bfloat16 else rows).numpy())
            if first == 0 or (first // _BATCH) % 10 == 9:
                log(f"Building the target-feature store {path}: {first + len(batch)}/{len(pixels)} images, "
                    f"{time.perf_counter() - start:.1f} s")
        return {"pixel_store": pixel_store.name, "identity": spec.identity, "shape": list(feature_shape)}

    def check(manifest: dict) -> str | None:  # built from this pixel store by this extractor, at this shape
        return row_store.mismatch(manifest, {"pixel_store": pixel_store.name, "identity": spec.identity,
                                             "shape": list(feature_shape)})

    _, built_s = row_store.open_or_build(
        path, (len(pixels), *feature_shape), on_disk, fill, check, "target-feature store",
        "Point data.cache_dir at a larger disk or train with data.feature_store=false.")
    return built_s

