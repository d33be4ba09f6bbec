"""The DDPM objective: MSE between the denoiser's output and its target (eps, v or x0), optionally min-SNR-γ
weighted per sample, plus an optional perceptual term on the implied x0."""

from __future__ import annotations

import torch
from torch import Tensor

from art_diffusion.diffusion.prediction import min_snr_weights
from art_diffusion.losses.perceptual import WeightedLoss


class DiffusionLoss(WeightedLoss):
    """``mse_weight * mean_i(w_i MSE_i(output, target)) + perceptual_weight * MSE(vgg(n(x0_hat)), vgg(n(x0)))``.

    ``w_i`` = 1, or the min-SNR-γ weight of sample i when ``min_snr_gamma`` is set (the module passes each
    sample's SNR). ``x0_hat`` is the clean image implied by the output, in [0, 1] pixels like ``x0``. It is only
    needed, and the module only computes it, when :attr:`needs_x0` (``perceptual_weight > 0``; off by default).
    """

    def __init__(self, mse_weight: float = 1.0, perceptual_weight: float = 0.0, vgg_weights: str = "imagenet",
                 vgg_layers: int = 16, min_snr_gamma: float | None = None) -> None:
        super().__init__(mse_weight, perceptual_weight, vgg_weights, vgg_layers)
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0 or None, got {min_snr_gamma}.")
        self.min_snr_gamma = min_snr_gamma

    @property
    def needs_x0(self) -> bool:
        return self.perceptual is not None

    def forward(self, output: Tensor, target: Tensor, x0_hat: Tensor | None = None, x0: Tensor | None = None,
                snr: Tensor | None = None, prediction: str = "eps") -> dict[str, Tensor]:
        """Returns ``{"loss", "mse"[, "perceptual"]}``: the weighted total and each part (mse min-SNR weighted)."""
        if self.needs_x0 and (x0_hat is None or x0 is None):
            raise ValueError("DiffusionLoss with perceptual_weight > 0 needs x0_hat and x0 (see needs_x0).")
        per_sample = (output.float() - target.float()).square().flatten(1).mean(dim=1)
        if self.min_snr_gamma is not None:
            if snr is None:
                raise ValueError("DiffusionLoss with min_snr_gamma needs each sample's snr.")
            per_sample = per_sample * min_snr_weights(snr.float(), self.min_snr_gamma, prediction)
        normalized = (self.normalize(x0_hat), self.normalize(x0)) if self.needs_x0 else (None, None)
        return self.combine(torch.mean(per_sample), *normalized)
