"""The article's hybrid loss: pixel MSE plus a perceptual MSE on frozen VGG16 features, in ImageNet space."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from art_diffusion.losses.perceptual import WeightedLoss


class HybridLoss(WeightedLoss):
    """``mse_weight * MSE(n(out), n(x)) + perceptual_weight * MSE(vgg(n(out)), vgg(n(x)))``, n = ImageNet normalisation.

    Inputs are [0, 1] images. Comparing both sides in ImageNet space keeps the article's balance between the two
    terms, while (unlike the article) output and target now live in the same space. With ``perceptual_weight=0``
    the VGG is never built or run.
    """

    def __init__(self, mse_weight: float = 1.0, perceptual_weight: float = 1.0, vgg_weights: str = "imagenet",
                 vgg_layers: int = 16) -> None:
        super().__init__(mse_weight, perceptual_weight, vgg_weights, vgg_layers)

    def forward(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Returns ``{"loss", "mse"[, "perceptual"]}``: the weighted total and each unweighted part."""
        out_n, target_n = self.normalize(output), self.normalize(target)
        return self.combine(F.mse_loss(out_n.float(), target_n.float()), out_n, target_n)  # reduced in fp32
