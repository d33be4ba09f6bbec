"""FD and KID of two feature sets through torchmetrics' FrechetInceptionDistance and KernelInceptionDistance.

The features are the project's VGG16 ones (art_diffusion.metrics.fd_vgg.features), computed once per image set
(so both scores share them and a real set's features can be cached) and handed to the metrics through
:class:`GivenFeatures`, the custom ``feature`` module torchmetrics accepts: it returns its (N, C) input as is.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

#: KID: the polynomial-kernel MMD is averaged over this many random subsets of at most this many images each.
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


class GivenFeatures(nn.Module):
    """torchmetrics' ``feature`` contract for features computed elsewhere: (N, C) in, the same (N, C) out."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features.double()


def frechet_distance(features1: Tensor, features2: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, C) feature sets (torchmetrics' FID maths)."""
    metric = FrechetInceptionDistance(feature=GivenFeatures(features1.shape[1]), normalize=True)
    metric.update(features1.double(), real=True)
    metric.update(features2.double(), real=False)
    return float(metric.compute())


def kernel_distance(features1: Tensor, features2: Tensor, seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): mean and std over random subsets of the unbiased polynomial-kernel MMD^2."""
    size = min(KID_SUBSET_SIZE, len(features1), len(features2))
    with warnings.catch_warnings():  # "will save all extracted features": what KID needs, a few MB here
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        metric = KernelInceptionDistance(feature=GivenFeatures(features1.shape[1]), subsets=KID_SUBSETS,
                                         subset_size=size, normalize=True)
    metric.update(features1.double(), real=True)
    metric.update(features2.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # the subsets are drawn from the global generator: seed them
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def scores(real: Tensor, fake: Tensor) -> dict[str, float]:
    """``{"fd_vgg", "kid", "kid_std"}`` of fake features against real ones."""
    kid, kid_std = kernel_distance(real, fake)
    return {"fd_vgg": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std}
