"""What both objectives share: the perceptual term (MSE between frozen VGG16 features of two ImageNet-normalised
images) and the weighted sum ``mse_weight * an MSE + perceptual_weight * that term``."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from art_diffusion.nets.vgg import ImageNetNormalize, VGG16Features, load_vgg16_state


class PerceptualLoss(nn.Module):
    """MSE between frozen VGG16 ``features[:num_layers]`` of two normalised images (16 = through relu3_3).

    The VGG is resolved and built by :meth:`build` (called from the LightningModule's ``setup``, so DDP ranks
    read the per-node cache that ``prepare_data`` filled) or lazily on first use outside Lightning.
    Its weights are non-persistent buffers: never trained, never in a checkpoint.
    """

    def __init__(self, weights: str = "imagenet", num_layers: int = 16) -> None:
        super().__init__()
        self.weights = weights
        self.num_layers = num_layers
        self.vgg: VGG16Features | None = None

    def prepare(self) -> None:
        """Fetch the weights into the on-disk cache without building anything (rank zero of each node)."""
        load_vgg16_state(self.weights, self.num_layers)

    def build(self, device: torch.device | str | None = None) -> None:
        if self.vgg is None:
            self.vgg = VGG16Features.from_weights(self.weights, self.num_layers)
        if device is not None:
            self.vgg.to(device)

    def target_features(self, target: Tensor) -> Tensor:
        """The frozen VGG's features of a normalised target, without autograd: what the loss compares against, and
        what the target-feature store (art_diffusion.data.feature_store) keeps per training image."""
        if self.vgg is None:
            self.build(target.device)
        with torch.no_grad():
            return self.vgg(target)

    def identity(self) -> dict:
        """What :meth:`target_features` depends on besides its input: the layer and a digest of the weights."""
        if self.vgg is None:
            self.build()
        digest = hashlib.sha256()
        for name, buffer in sorted(self.vgg.named_buffers()):
            digest.update(name.encode() + buffer.detach().float().cpu().contiguous().numpy().tobytes())
        return {"vgg_layers": self.num_layers, "weights": digest.hexdigest()[:20]}

    def _features(self, output: Tensor, target: Tensor, target_features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.vgg is None:
            self.build(output.device)
        if target_features is None:
            target_features = self.target_features(target)
        out_features = self.vgg(output)
        if target_features.shape != out_features.shape:
            raise ValueError(f"Precomputed target features have shape {tuple(target_features.shape)}, the output's "
                             f"features {tuple(out_features.shape)}: they come from another image size or layer.")
        return out_features, target_features

    def forward(self, output: Tensor, target: Tensor, target_features: Tensor | None = None) -> Tensor:
        """``target_features``: the target's features when already known (the store), else computed here."""
        # reduced in fp32 under bf16 autocast too (features may be bf16; the sum of a million squares is not)
        return F.mse_loss(*(f.float() for f in self._features(output, target, target_features)))

    def per_image(self, output: Tensor, target: Tensor) -> Tensor:
        """The same distance for each image of the batch, shape ``(N,)`` (evaluation averages over images)."""
        out_features, target_features = self._features(output, target)
        return (out_features.float() - target_features.float()).square().flatten(1).mean(dim=1)


class WeightedLoss(nn.Module):
    """Base of the objectives: ``mse_weight * <an MSE> + perceptual_weight * PerceptualLoss``.

    With ``perceptual_weight=0`` the VGG is never built or run. Subclasses compute their MSE and call
    :meth:`combine`.
    """

    def __init__(self, mse_weight: float, perceptual_weight: float, vgg_weights: str, vgg_layers: int) -> None:
        super().__init__()
        self.mse_weight = mse_weight
        self.perceptual_weight = perceptual_weight
        self.normalize = ImageNetNormalize()
        self.perceptual = PerceptualLoss(vgg_weights, vgg_layers) if perceptual_weight > 0 else None

    def combine(self, mse: Tensor, output_n: Tensor | None, target_n: Tensor | None,
                target_features: Tensor | None = None) -> dict[str, Tensor]:
        """``{"loss", "mse"[, "perceptual"]}``: the weighted total and each unweighted part; images normalised;
        ``target_features``: the VGG features of ``target_n`` when already known."""
        parts = {"mse": mse}
        total = self.mse_weight * mse
        if self.perceptual is not None:
            parts["perceptual"] = self.perceptual(output_n, target_n, target_features)
            total = total + self.perceptual_weight * parts["perceptual"]
        return {"loss": total, **parts}
