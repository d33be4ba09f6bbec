"""The frozen VGG16 feature extractor used by the perceptual loss, LPIPS and FD-VGG, and its input normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from art_diffusion.nets.vgg.layers import check_num_layers, features_state, layer_kinds
from art_diffusion.nets.vgg.weights import load_vgg16_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetNormalize(nn.Module):
    """[0, 1] pixels -> the ImageNet-standardised space the VGG was trained in."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class VGG16Features(torch.nn.Module):
    """Frozen VGG16 ``features[:num_layers]``; expects ImageNet-normalised input.

    Weights are non-persistent buffers: they follow ``.to()`` but stay out of ``state_dict()``
    (no 60 MB of fixed weights in every checkpoint) and out of ``parameters()`` (never optimised).
    """

    def __init__(
        self,
        state: dict[str, torch.Tensor],
        num_layers: int = 16,
        return_layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_num_layers(num_layers)
        state = features_state(state, num_layers, "VGG16Features state")
        self.num_layers = num_layers
        self.return_layers = None if return_layers is None else [int(i) for i in return_layers]
        if self.return_layers is not None:
            bad = [i for i in self.return_layers if not 0 <= i < num_layers]
            if bad or not self.return_layers:
                raise ValueError(
                    f"return_layers must be a non-empty list of indices in 0..{num_layers - 1} "
                    f"(features[:{num_layers}]), got {list(return_layers)}."
                )
        self._kinds = [kind for kind, _ in layer_kinds()[:num_layers]]
        for idx, kind in enumerate(self._kinds):
            if kind == "conv":
                self.register_buffer(f"weight{idx}", state[f"{idx}.weight"], persistent=False)
                self.register_buffer(f"bias{idx}", state[f"{idx}.bias"], persistent=False)
        super().train(False)

    @classmethod
    def from_weights(
        cls,
        weights: str = "imagenet",
        num_layers: int = 16,
        return_layers: Sequence[int] | None = None,
    ) -> VGG16Features:
        return cls(load_vgg16_state(weights, num_layers), num_layers, return_layers)

    def train(self, mode: bool = True) -> VGG16Features:
        # a frozen feature extractor: parent modules' .train() must not change it
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        wanted = self.return_layers
        last = self.num_layers - 1 if wanted is None else max(wanted)
        outputs: dict[int, torch.Tensor] = {}
        for idx, kind in enumerate(self._kinds[: last + 1]):
            if kind == "conv":
                x = F.conv2d(x, getattr(self, f"weight{idx}"), getattr(self, f"bias{idx}"), padding=1)
            elif kind == "relu":
                # in place (as torchvision's VGG) unless the conv output before it is one of the returned layers
                x = F.relu(x) if wanted is not None and idx - 1 in wanted else F.relu_(x)
            else:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            if wanted is not None and idx in wanted:
                outputs[idx] = x
        if wanted is None:
            return x
        return [outputs[i] for i in wanted]

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, return_layers={self.return_layers}"
