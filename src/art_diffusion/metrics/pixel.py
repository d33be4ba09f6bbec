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


def mse(reconstructions: Tensor, images: Tensor) -> Tensor:
    return ((reconstructions - images) ** 2).flatten(1).mean(dim=1)


def psnr(reconstructions: Tensor, images: Tensor) -> Tensor:
    """In dB for data range 1; a perfect reconstruction is +inf."""
    return 10 * torch.log10(1.0 / mse(reconstructions, images))


def ssim(reconstructions: Tensor, images: Tensor) -> Tensor:
    if min(images.shape[-2:]) < SSIM_KERNEL:
        return torch.full((images.shape[0],), math.nan)
    return structural_similarity_index_measure(reconstructions, images, data_range=1.0, reduction="none")


def pixel_metrics(reconstructions: Tensor, images: Tensor) -> dict[str, Tensor]:
    return {"psnr": psnr(reconstructions, images), "ssim": ssim(reconstructions, images)}

