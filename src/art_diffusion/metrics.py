"""Per-image reconstruction metrics on [0, 1] images: MSE, PSNR, SSIM, the loss's VGG distance, LPIPS.

Every function returns one value per image (shape ``(N,)``), so a dataset's score is the mean over its images
whatever the batch sizes were.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from art_diffusion.loss import ImageNetNormalize, PerceptualLoss

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


class PerceptualDistance(torch.nn.Module):
    """The perceptual term of the training loss, per image: MSE of VGG16 ``features[:vgg_layers]`` in ImageNet space."""

    def __init__(self, vgg_weights: str = "imagenet", vgg_layers: int = 16) -> None:
        super().__init__()
        self.normalize = ImageNetNormalize()
        self.perceptual = PerceptualLoss(vgg_weights, vgg_layers)
        self.perceptual.build()

    @torch.no_grad()
    def forward(self, reconstructions: Tensor, images: Tensor) -> Tensor:
        vgg = self.perceptual.vgg
        return mse(vgg(self.normalize(reconstructions)), vgg(self.normalize(images)))
