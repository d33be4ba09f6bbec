"""Image grids of a run: the one way a grid leaves training (to every logger that shows images and to a PNG), and the
two kinds of grid.

- :class:`ImageGridLogger`: the base; subclasses only say what the rows are.
- :class:`ReconstructionLogger`: fixed validation images above what the module makes of them (``log_images``).
- :class:`SampleLogger`: images a diffusion model generates from fixed noise (one grid per class when conditional).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.nn.functional import interpolate
from torchvision.utils import make_grid, save_image

from art_diffusion.lightning.loggers import log_image
from art_diffusion.storage import atomic_path, inside


def logger_step(trainer: L.Trainer) -> int:
    """The step Lightning's loggers put the current scalars at (optimizer steps of fit so far, not counting the one
    in progress): images logged at it sit on the same step as the validation scalars of their epoch."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


class ImageGridLogger(L.Callback):
    """Base of the image callbacks: every ``every_n_epochs`` validation epochs (rank zero, not during the sanity
    check) it asks :meth:`make_rows` for rows of [0, 1] images and writes them as one grid, to every logger that
    shows images (:func:`~art_diffusion.lightning.loggers.log_image`) under ``tag`` and to ``dirpath/epoch_XXX.png``.
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
        # a grid's name may be a class name from the data or a checkpoint: inside() keeps the file in dirpath
        with atomic_path(inside(self.dirpath, f"epoch_{epoch:03d}{'_' + name if name else ''}.png")) as tmp:
            save_image(make_grid(images, nrow=nrow, padding=2, pad_value=1.0), tmp, format="png")


class ReconstructionLogger(ImageGridLogger):
    """The images are the first ``num_images`` of the (unshuffled) validation loader, so every grid shows the same
    inputs. The module must expose ``log_images(images) -> dict[str, Tensor]`` of [0, 1] image batches; each entry
    becomes a row of the grid (taming-transformers' convention)."""

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 8,
                 tag: str = "visuals/reconstructions", logged_size: int = 256) -> None:
        super().__init__(dirpath, every_n_epochs, tag, logged_size)
        self.num_images = num_images
        self.images: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        have = 0 if self.images is None else len(self.images)
        if have < self.num_images:
            new = batch[0][: self.num_images - have].detach().cpu()
            self.images = new if self.images is None else torch.cat([self.images, new])

    def make_rows(self, trainer, pl_module) -> tuple[torch.Tensor, int] | None:
        if self.images is None:
            return None
        rows = pl_module.log_images(self.images)
        return torch.cat([row.detach().float().cpu() for row in rows.values()]), len(self.images)


class SampleLogger(ImageGridLogger):
    """Samples ``num_images`` with ``sampler`` (ddim | dpm++2m | ddpm) in ``steps`` from a fixed ``seed``.

    The fixed seed gives every epoch the same starting noise, so grids compare across epochs. The module must
    expose ``sample(num_images, sampler, steps, eta, generator, labels, guidance_scale)`` like DiffusionModule. A
    conditional model gets one grid per class (``tag/<class>``, ``epoch_XXX_<class>.png``), all from that same
    noise, so the grids also show what the class changes. With many classes that is most of a validation epoch:
    ``max_classes`` grids per epoch at most, the next ``max_classes`` classes each time (rotating, by the epoch, so
    a resumed run goes on where it stopped); ``None`` = every class every time.
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 16, steps: int = 25,
                 eta: float = 0.0, seed: int = 0, guidance_scale: float = 1.0, tag: str = "visuals/samples",
                 logged_size: int = 256, sampler: str = "ddim", max_classes: int | None = 8) -> None:
        super().__init__(dirpath, every_n_epochs, tag, logged_size)
        self.max_classes = max_classes
        self.num_images = num_images
        self.sampler = sampler
        self.steps = steps
        self.eta = eta
        self.seed = seed
        self.guidance_scale = guidance_scale

    def _sample(self, pl_module, labels: torch.Tensor | None) -> torch.Tensor:
        return pl_module.sample(
            self.num_images, sampler=self.sampler, steps=self.steps, eta=self.eta,
            generator=torch.Generator().manual_seed(self.seed), labels=labels, guidance_scale=self.guidance_scale,
        )

    def make_grids(self, trainer, pl_module) -> dict[str, tuple[torch.Tensor, int]]:
        nrow = math.ceil(math.sqrt(self.num_images))
        num_classes = getattr(pl_module, "num_classes", None)
        if not num_classes:
            return {"": (self._sample(pl_module, None), nrow)}
        names = getattr(pl_module, "class_names", None) or [str(i) for i in range(num_classes)]
        labels = self.classes_this_epoch(len(names), trainer.current_epoch)
        return {names[label]: (self._sample(pl_module, torch.full((self.num_images,), label, dtype=torch.long)),
                               nrow) for label in labels}

    def classes_this_epoch(self, num_classes: int, epoch: int) -> list[int]:
        """The labels whose grids the validation of ``epoch`` logs: all, or the next ``max_classes`` in turn."""
        if not self.max_classes or self.max_classes >= num_classes:
            return list(range(num_classes))
        start = (epoch + 1) // self.every_n_epochs - 1  # the how-many-th grid epoch this is
        return sorted((start * self.max_classes + i) % num_classes for i in range(self.max_classes))
