"""Callbacks that stay generic: they ask the LightningModule for images and only write them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image


class ReconstructionLogger(L.Callback):
    """Every ``every_n_epochs`` logs a grid of a fixed set of validation images above what the module makes of them.

    The images are the first ``num_images`` of the (unshuffled) validation loader, so every grid shows the same
    inputs. The module must expose ``log_images(images) -> dict[str, Tensor]`` of [0, 1] image batches; each entry
    becomes a row of the grid. The grid goes to TensorBoard under ``tag`` and to ``dirpath/epoch_XXX.png``.
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 8, tag: str = "reconstructions") -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.tag = tag
        self.images: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        have = 0 if self.images is None else len(self.images)
        if have < self.num_images:
            new = batch[0][: self.num_images - have].detach().cpu()
            self.images = new if self.images is None else torch.cat([self.images, new])

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or self.images is None or (epoch + 1) % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        rows = pl_module.log_images(self.images)
        pl_module.train(was_training)
        grid = make_grid(torch.cat([row.detach().float().cpu() for row in rows.values()]), nrow=len(self.images),
                         padding=2, pad_value=1.0)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.tag, grid, global_step=trainer.global_step)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"epoch_{epoch:03d}.png")
