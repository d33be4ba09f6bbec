"""SampleLogger: a grid of images generated from the same noise every N epochs, to watch a diffusion model learn."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image


class SampleLogger(L.Callback):
    """Every ``every_n_epochs`` samples ``num_images`` with DDIM (``steps``) from a fixed ``seed``.

    The fixed seed gives every epoch the same starting noise (and classes), so grids compare across epochs.
    The grid goes to TensorBoard under ``tag`` and to ``dirpath/epoch_XXX.png``. The module must expose
    ``sample(num_images, sampler, steps, eta, generator, labels, guidance_scale)`` like DiffusionModule.
    A conditional model cycles through its classes, one per column.
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 16, steps: int = 25,
                 eta: float = 0.0, seed: int = 0, guidance_scale: float = 1.0, tag: str = "samples") -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.steps = steps
        self.eta = eta
        self.seed = seed
        self.guidance_scale = guidance_scale
        self.tag = tag

    def _labels(self, pl_module, nrow: int) -> torch.Tensor | None:
        num_classes = getattr(pl_module, "num_classes", None)
        if not num_classes:
            return None
        return torch.arange(self.num_images) % nrow % num_classes

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or (epoch + 1) % self.every_n_epochs:
            return
        nrow = math.ceil(math.sqrt(self.num_images))
        images = pl_module.sample(
            self.num_images, sampler="ddim", steps=self.steps, eta=self.eta,
            generator=torch.Generator().manual_seed(self.seed), labels=self._labels(pl_module, nrow),
            guidance_scale=self.guidance_scale,
        )
        grid = make_grid(images.float().cpu(), nrow=nrow, padding=2, pad_value=1.0)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.tag, grid, global_step=trainer.global_step)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"epoch_{epoch:03d}.png")
