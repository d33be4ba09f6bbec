"""GenerationScores: FD-VGG and KID of a diffusion model's samples against held-out images, every N epochs."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from art_diffusion.metrics.fd_vgg import LAYERS, features, layer_extractor
from art_diffusion.metrics.scores import scores


class GenerationScores(L.Callback):
    """Every ``every_n_epochs`` validation epochs (0 = never), logs ``val/fd_vgg`` and ``val/kid``.

    ``num_images`` images sampled with ``sampler`` in ``steps`` from a fixed ``seed`` (unconditional) are scored
    against as many images of the validation split (never trained on), whose VGG features are computed once per
    run. The module must expose ``sample()`` like DiffusionModule.
    """

    def __init__(self, every_n_epochs: int | None = 0, num_images: int = 128, sampler: str = "dpm++2m",
                 steps: int = 20, seed: int = 0, batch_size: int = 64, vgg_weights: str = "imagenet",
                 layer: int = LAYERS["relu5_3"], input_size: int = 224) -> None:
        self.every_n_epochs = every_n_epochs or 0
        self.num_images, self.sampler, self.steps, self.seed = num_images, sampler, steps, seed
        self.batch_size, self.vgg_weights, self.layer, self.input_size = batch_size, vgg_weights, layer, input_size
        self._vgg = None
        self._real: Tensor | None = None

    def _features(self, images: Tensor, device) -> Tensor:
        if self._vgg is None:
            self._vgg = layer_extractor(self.vgg_weights, self.layer)
        return features(images, self._vgg, self.input_size, self.batch_size, device)

    def _real_images(self, trainer: L.Trainer) -> Tensor:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        images, have = [], 0
        for batch in loader:
            images.append(batch[0])
            have += len(batch[0])
            if have >= self.num_images:
                break
        return torch.cat(images)[: self.num_images].float()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self.every_n_epochs or trainer.sanity_checking or (epoch + 1) % self.every_n_epochs:
            return
        if trainer.is_global_zero:
            device = pl_module.device
            if self._real is None:
                self._real = self._features(self._real_images(trainer), device)
            fake = pl_module.sample(len(self._real), sampler=self.sampler, steps=self.steps,
                                    batch_size=self.batch_size, generator=torch.Generator().manual_seed(self.seed))
            fake = fake.cpu()
            found = scores(self._real, self._features(fake, device))
            pl_module.log("val/fd_vgg", found["fd_vgg"], rank_zero_only=True)
            pl_module.log("val/kid", found["kid"], rank_zero_only=True)
