"""Per-image reconstruction metrics on [0, 1] images: MSE, PSNR, SSIM.

Every function returns one value per image (shape ``(N,)``), so a dataset's score is the mean over its images
whatever the batch sizes were.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

SSIM_KERNEL = 11  # torchmetrics' default Gaussian window; smaller images have no SSIM
SSIM_STRIP_PIXELS = 2**20  # SSIM map values computed at once: bounds its memory on native-size images


def mse(reconstructions: Tensor, images: Tensor) -> Tensor:
    return ((reconstructions - images) ** 2).flatten(1).mean(dim=1)


def psnr(reconstructions: Tensor, images: Tensor) -> Tensor:
    """In dB for data range 1; a perfect reconstruction is +inf."""
    return 10 * torch.log10(1.0 / mse(reconstructions, images))


def ssim(reconstructions: Tensor, images: Tensor, strip_pixels: int = SSIM_STRIP_PIXELS) -> Tensor:
    """torchmetrics' SSIM (Gaussian 11x11 window, data range 1, reflected borders), computed in horizontal strips of
    about ``strip_pixels`` map values: its intermediate maps take ~20 floats per pixel (6 GB for a 3000 x 3000
    image at once). Exact up to float rounding: each strip's map rows are computed from the image rows they read
    (a halo of half a window), and the image's own top and bottom are reflected as in one call."""
    if min(images.shape[-2:]) < SSIM_KERNEL:
        return torch.full((images.shape[0],), math.nan)
    halo, (h, w) = SSIM_KERNEL // 2, images.shape[-2:]
    rows = max(2 * halo, strip_pixels // w)
    if h <= rows:
        return structural_similarity_index_measure(reconstructions, images, data_range=1.0, reduction="none")
    total = torch.zeros(images.shape[0], dtype=torch.float64)
    for top in range(0, h, rows):  # map rows [top, end), read from image rows [first, last)
        end = min(top + rows, h)
        first, last = max(0, top - halo), min(h, end + halo)
        _, full = structural_similarity_index_measure(reconstructions[..., first:last, :], images[..., first:last, :],
                                                      data_range=1.0, reduction="none", return_full_image=True)
        total += full[..., top - first:end - first, :].double().flatten(1).sum(1)
    return (total / (images[0].numel())).to(images.dtype)


def pixel_metrics(reconstructions: Tensor, images: Tensor) -> dict[str, Tensor]:
    return {"psnr": psnr(reconstructions, images), "ssim": ssim(reconstructions, images)}

