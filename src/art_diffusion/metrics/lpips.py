"""LPIPS (VGG variant) computed offline: torchmetrics' shipped linear heads on this project's resolved VGG16.

torchmetrics' ``LearnedPerceptualImagePatchSimilarity(net_type="vgg")`` downloads its VGG16 backbone through
torchvision. Here the backbone comes from :func:`art_diffusion.nets.vgg.load_vgg16_state` (the same offline
resolver as the perceptual loss) and the five linear heads from the ``lpips_models/vgg.pth`` torchmetrics ships,
loaded with ``weights_only=True``. The arithmetic follows torchmetrics' ``_LPIPS.forward`` (Zhang et al., 2018);
``tests/test_evaluate.py`` checks that both give the same numbers on the same backbone weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from art_diffusion.nets.vgg import VGG16_NUM_LAYERS, VGG16Features, load_vgg16_state
from art_diffusion.storage import load_torch

#: VGG16 ``features`` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the layers LPIPS compares.
LPIPS_VGG_LAYERS = (3, 8, 15, 22, 29)
# LPIPS' input scaling for [-1, 1] images (its ScalingLayer): close to, but not exactly, ImageNet normalisation.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def torchmetrics_vgg_heads_path() -> Path:
    """The linear-head weights torchmetrics installs with itself (no download)."""
    import torchmetrics.functional.image.lpips as tm_lpips

    return Path(tm_lpips.__file__).parent / "lpips_models" / "vgg.pth"


def _unit_normalize(features: Tensor, eps: float = 1e-8) -> Tensor:
    return features / torch.sqrt(eps + torch.sum(features**2, dim=1, keepdim=True))


class LPIPS(nn.Module):
    """``forward(x, y) -> (N,)`` LPIPS distances between [0, 1] image batches; lower is more similar."""

    def __init__(self, vgg_weights: str = "imagenet", heads_path: str | Path | None = None) -> None:
        super().__init__()
        # All of VGG16's features (the forward pass stops at relu5_3): the slice the weight cache already holds
        # for the full network, so no second copy is resolved.
        state = load_vgg16_state(vgg_weights, VGG16_NUM_LAYERS)
        self.vgg = VGG16Features(state, VGG16_NUM_LAYERS, return_layers=LPIPS_VGG_LAYERS)
        path = Path(heads_path) if heads_path is not None else torchmetrics_vgg_heads_path()
        heads = load_torch(path)
        for k in range(len(LPIPS_VGG_LAYERS)):
            self.register_buffer(f"head{k}", heads[f"lin{k}.model.1.weight"].float(), persistent=False)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        feats_x = self.vgg(((2 * x - 1) - self.shift) / self.scale)
        feats_y = self.vgg(((2 * y - 1) - self.shift) / self.scale)
        distance = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for k, (fx, fy) in enumerate(zip(feats_x, feats_y)):
            diff = (_unit_normalize(fx) - _unit_normalize(fy)) ** 2
            distance = distance + F.conv2d(diff, getattr(self, f"head{k}")).mean(dim=(1, 2, 3))
        return distance
