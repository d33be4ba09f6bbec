"""FD-VGG (and KID): the Fréchet distance between two image sets in ImageNet VGG16 feature space.

FID's formula (Heusel et al. 2017; computed by torchmetrics, see art_diffusion.metrics.scores), and KID, on the
spatially averaged activations of one VGG16 layer instead of Inception pool3 features, because the Inception
weights cannot be fetched offline and the VGG16 ones resolve here
(art_diffusion.nets.vgg). The numbers are NOT FID and do not compare with published FIDs; compare FD-VGG with
FD-VGG, at the same image_size, input_size, layer and a similar number of images (the estimate is biased upwards
for small sets).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from art_diffusion import DataError, MissingPathError
from art_diffusion.data.images import IMAGE_EXTENSIONS, BadImage, load_rgb
from art_diffusion.data.listing import list_images
from art_diffusion.metrics.scores import frechet_distance, scores
from art_diffusion.nets.vgg import ImageNetNormalize, VGG16Features
from art_diffusion.storage import load_torch, optional_cache_dir, optional_write, save_torch

log = logging.getLogger(__name__)

#: torchvision VGG16 ``features`` indices of the layers worth comparing.
LAYERS = {"relu3_3": 15, "relu4_3": 22, "relu5_3": 29}


def load_images(folder: str | Path, image_size: int, max_images: int | None = None) -> Tensor:
    """(N, 3, image_size, image_size) in [0, 1] from every image under ``folder`` (any layout: flat folders and
    ImageFolders both work); unreadable files are skipped with a warning, never fatal."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise MissingPathError(f"Image folder {str(root)!r} {what}: pass a folder of images.")
    files = list_images(root)
    if not files:
        raise MissingPathError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}.")
    images = []
    for path in files:
        if max_images is not None and len(images) >= max_images:
            break
        try:
            images.append(torch.from_numpy(load_rgb(path, image_size)).permute(2, 0, 1))
        except BadImage as exc:
            log.warning("FD-VGG: skipping unreadable image %s (%s)", path, exc)
    if len(images) < 2:
        raise DataError(f"FD-VGG needs at least 2 readable images in {str(folder)!r}, found {len(images)}.")
    return torch.stack(images).float().div_(255)


def layer_extractor(weights: str = "imagenet", layer: int = LAYERS["relu5_3"]) -> VGG16Features:
    """The project's VGG16 feature extractor, stopped at ``features[layer]``."""
    return VGG16Features.from_weights(weights, num_layers=layer + 1, return_layers=[layer])


@torch.no_grad()
def features(images: Tensor, vgg: VGG16Features, input_size: int = 224, batch_size: int = 32,
             device: str | torch.device = "cpu") -> Tensor:
    """[0, 1] images -> (N, C) float64: the spatially averaged activations of ``vgg``'s layer at ``input_size`` px."""
    vgg, normalize = vgg.to(device), ImageNetNormalize().to(device)
    chunks = []
    for start in range(0, len(images), batch_size):
        x = F.interpolate(images[start:start + batch_size].to(device), size=(input_size, input_size),
                          mode="bilinear", align_corners=False)
        chunks.append(vgg(normalize(x))[0].mean(dim=(2, 3)).double().cpu())
    return torch.cat(chunks)


def fd_vgg(
    images1: Tensor,
    images2: Tensor,
    weights: str = "imagenet",
    layer: int = LAYERS["relu5_3"],
    input_size: int = 224,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> float:
    """FD-VGG between two (N, 3, H, W) batches of [0, 1] images (each set at one size; the sizes may differ)."""
    vgg = layer_extractor(weights, layer)
    return frechet_distance(*(features(x, vgg, input_size, batch_size, device) for x in (images1, images2)))


def _seal(path: Path, found: Tensor) -> str:
    """A hash of the cache file's name (its key) and the features' bytes: a reader sees any edit or a copied file."""
    data = found.detach().contiguous().view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(path.name.encode() + b"\n" + data).hexdigest()


def _read_cached(path: Path) -> Tensor | None:
    """The features stored at ``path`` exactly as they were written, else None: a cache that cannot be read (torch's
    reader raises RuntimeError, pickle errors and more), is of another form or was edited is logged and recomputed."""
    try:
        stored = load_torch(path)
    except Exception as exc:  # any failure to read an untrusted cache file: it is only a cache
        why = f"{type(exc).__name__}: {str(exc)[:120]}"
    else:
        found = stored.get("features") if isinstance(stored, dict) and set(stored) == {"features", "seal"} else None
        intact = (isinstance(found, Tensor) and found.layout == torch.strided and found.dtype == torch.float64
                  and found.ndim == 2)
        if intact and stored["seal"] == _seal(path, found):
            return found
        why = "not the features and seal it was written with"
    log.warning("The FD-VGG feature cache %s is damaged or edited (%s): computing the features again", path, why)
    return None


def folder_features(folder: str | Path, image_size: int, max_images: int | None, weights: str, layer: int,
                    input_size: int, batch_size: int, device) -> Tensor:
    """The (N, C) VGG features of a folder's images, cached in the project cache dir under a key of the folder's
    files (path, size, mtime) and the settings: a real set is read and run through the VGG once. The cache file
    holds a seal (:func:`_seal`): a damaged or edited one is logged and recomputed, never used or a traceback."""
    root = Path(folder).expanduser()
    files = list_images(root) if root.is_dir() else []
    stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = hashlib.sha256(json.dumps([stamp, image_size, max_images, str(weights), layer, input_size]).encode())
    directory = optional_cache_dir(None, "the FD-VGG feature cache (the real set is read again)")
    path = directory / "fd_vgg" / f"{key.hexdigest()[:32]}.pt" if directory else None
    if files and weights != "random" and path and path.is_file() and (cached := _read_cached(path)) is not None:
        return cached
    found = features(load_images(folder, image_size, max_images), layer_extractor(weights, layer), input_size,
                     batch_size, device)
    if weights != "random" and path:  # random weights differ from run to run: nothing to reuse
        with optional_write(f"the FD-VGG feature cache {path} (the real set is read again next time)"):
            save_torch({"features": found, "seal": _seal(path, found)}, path)
    return found


def fd_vgg_folders(
    real_dir: str | Path,
    fake_dir: str | Path,
    image_size: int = 64,
    max_images: int | None = None,
    weights: str = "imagenet",
    layer: int = LAYERS["relu5_3"],
    input_size: int = 224,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> dict[str, float | int]:
    """FD-VGG and KID between two image folders, both first resized to ``image_size`` (the generator's
    resolution), so the distances measure content rather than a resolution gap. The real set's features are
    cached (:func:`folder_features`)."""
    settings = (image_size, max_images, weights, layer, input_size, batch_size, device)
    real = folder_features(real_dir, *settings)
    fake = features(load_images(fake_dir, image_size, max_images), layer_extractor(weights, layer), input_size,
                    batch_size, device)
    return {**scores(real, fake), "num_real": len(real), "num_fake": len(fake)}
