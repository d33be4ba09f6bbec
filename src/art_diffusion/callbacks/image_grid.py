"""ImageGridLogger: the one way an image grid leaves training, to every logger that shows images and to a PNG."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from art_diffusion.storage import atomic_path


class ImageGridLogger(L.Callback):
    """Base of the image callbacks: every ``every_n_epochs`` validation epochs (rank zero, not during the sanity
    check) it asks :meth:`make_rows` for rows of [0, 1] images and writes them as one grid, to TensorBoard under
    ``tag`` and to ``dirpath/epoch_XXX.png``. Subclasses only say what the rows are."""

    def __init__(self, dirpath: str, every_n_epochs: int, tag: str) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.tag = tag

    def make_rows(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, int] | None:
        """``(images, nrow)``: the grid's images, ``nrow`` per row; None when there is nothing to show yet."""
        raise NotImplementedError

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or (epoch + 1) % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        rows = self.make_rows(trainer, pl_module)
        pl_module.train(was_training)
        if rows is None:
            return
        images, nrow = rows
        grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=1.0)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.tag, grid, global_step=trainer.global_step)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dirpath / f"epoch_{epoch:03d}.png") as tmp:
            save_image(grid, tmp, format="png")
