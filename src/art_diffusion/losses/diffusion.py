"""The DDPM objective: MSE between predicted and true noise, plus an optional perceptual term on the implied x0."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from art_diffusion.losses.perceptual import WeightedLoss


class DiffusionLoss(WeightedLoss):
    """``mse_weight * MSE(eps_hat, eps) + perceptual_weight * MSE(vgg(n(x0_hat)), vgg(n(x0)))``.

    ``x0_hat`` is the clean image implied by ``eps_hat``, in [0, 1] pixels like ``x0``. It is only needed, and the
    module only computes it, when :attr:`needs_x0` (``perceptual_weight > 0``; off by default: at large t x0_hat
    is mostly noise).
    """

    def __init__(self, mse_weight: float = 1.0, perceptual_weight: float = 0.0, vgg_weights: str = "imagenet",
                 vgg_layers: int = 16) -> None:
        super().__init__(mse_weight, perceptual_weight, vgg_weights, vgg_layers)

    @property
    def needs_x0(self) -> bool:
        return self.perceptual is not None

    def forward(self, eps_hat: Tensor, eps: Tensor, x0_hat: Tensor | None = None,
                x0: Tensor | None = None) -> dict[str, Tensor]:
        """Returns ``{"loss", "mse"[, "perceptual"]}``: the weighted total and each unweighted part."""
        if self.needs_x0 and (x0_hat is None or x0 is None):
            raise ValueError("DiffusionLoss with perceptual_weight > 0 needs x0_hat and x0 (see needs_x0).")
        normalized = (self.normalize(x0_hat), self.normalize(x0)) if self.needs_x0 else (None, None)
        return self.combine(F.mse_loss(eps_hat, eps), *normalized)
