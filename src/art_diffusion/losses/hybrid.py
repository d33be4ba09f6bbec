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

    def forward(self, output: Tensor, target: Tensor, target_features: Tensor | None = None) -> dict[str, Tensor]:
        """Returns ``{"loss", "mse"[, "perceptual"]}``: the weighted total and each unweighted part.

        ``target_features``: ``perceptual.target_features(normalize(target))`` when already known (the training
        split's target-feature store); the VGG then runs on the output only.
        """
        out_n, target_n = self.normalize(output), self.normalize(target)
        mse = F.mse_loss(out_n.float(), target_n.float())  # reduced in fp32
        return self.combine(mse, out_n, target_n, target_features)
