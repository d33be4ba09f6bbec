"""ImageGridLogger: the one way an image grid leaves training, to every logger that shows images and to a PNG."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.nn.functional import interpolate
from torchvision.utils import make_grid, save_image

from art_diffusion.loggers import log_image
from art_diffusion.storage import atomic_path


def logger_step(trainer: L.Trainer) -> int:
    """The step Lightning's loggers put the current scalars at (optimizer steps of fit so far, not counting the one
    in progress): images logged at it sit on the same step as the validation scalars of their epoch."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


class ImageGridLogger(L.Callback):
    """Base of the image callbacks: every ``every_n_epochs`` validation epochs (rank zero, not during the sanity
    check) it asks :meth:`make_rows` for rows of [0, 1] images and writes them as one grid, to every logger that
    shows images (:func:`~art_diffusion.loggers.log_image`) under ``tag`` and to ``dirpath/epoch_XXX.png``.
    Subclasses only say what the rows are.

    The PNG files keep the images' own pixels. The loggers get each image enlarged by a whole factor (nearest
    neighbour, so pixels stay sharp squares) until it is at least ``logged_size`` pixels tall: a 32 or 64 px grid
    is a stamp in a browser. ``logged_size=0`` logs the native size.
    """

    def __init__(self, dirpath: str, every_n_epochs: int, tag: str, logged_size: int = 256) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.tag = tag
        self.logged_size = logged_size

    def make_rows(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, int] | None:
        """``(images, nrow)``: the grid's images, ``nrow`` per row; None when there is nothing to show yet."""
        raise NotImplementedError

    def logged_scale(self, image_height: int) -> int:
        """The whole factor that makes an image ``image_height`` px tall at least ``logged_size`` px tall."""
        return max(1, math.ceil(self.logged_size / image_height))

    def make_grids(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, tuple[torch.Tensor, int]]:
        """Named grids ``{name: (images, nrow)}``, each logged under ``tag/name`` and written to
        ``epoch_XXX_name.png`` (the name ``""``: ``tag`` and ``epoch_XXX.png``). By default the one grid of
        :meth:`make_rows`; override for several (a conditional model's grid per class)."""
        rows = self.make_rows(trainer, pl_module)
        return {} if rows is None else {"": rows}

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or (epoch + 1) % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        grids = self.make_grids(trainer, pl_module)
        pl_module.train(was_training)
        for name, (images, nrow) in grids.items():
            self._write(trainer, epoch, name, images.detach().float().cpu(), nrow)

    def _write(self, trainer: L.Trainer, epoch: int, name: str, images: torch.Tensor, nrow: int) -> None:
        enlarged = interpolate(images, scale_factor=self.logged_scale(images.shape[-2]), mode="nearest")
        log_image(trainer.loggers, f"{self.tag}/{name}" if name else self.tag,
                  make_grid(enlarged, nrow=nrow, padding=2, pad_value=1.0), step=logger_step(trainer))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dirpath / f"epoch_{epoch:03d}{'_' + name if name else ''}.png") as tmp:
            save_image(make_grid(images, nrow=nrow, padding=2, pad_value=1.0), tmp, format="png")
