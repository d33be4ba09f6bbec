"""The experiment loggers' side of the project: TensorBoard tags that read well, and image grids every logger shows.

:class:`TensorBoardLogger` is Lightning's with its Time Series tab opening on the losses and metrics, not on
``best_epoch`` and ``epoch``. TensorBoard sorts cards by tag and groups them by the part before the first ``/``; the
first two groups are expanded. Metrics are ``train/*``, ``val/*``, ``test/*``; image grids are ``visuals/*`` (the
callbacks' tags). Tags without a group (Lightning's ``epoch``, ``lr-Adam`` of the learning-rate monitor, the run's
final ``best_epoch``) would sort first; this logger files them under :data:`LATE_GROUP`, which sorts after all of
those. Only the tag names in the event files change: metric names elsewhere (checkpoints, ``metrics.json``, CSV)
stay as they are.

:func:`log_image` sends an image grid to every logger that can show images, each through its own API: TensorBoard
(``add_image``), Weights & Biases (``log_image``) and MLflow (``log_image`` with a key and a step, its UI's image
slider). Loggers without images (CSV) have the PNG files the image callbacks write in the run dir.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from art_diffusion.storage import atomic_path

#: The group of the bookkeeping scalars; "z_" sorts it after train, val, test and visuals in TensorBoard.
LATE_GROUP = "z_run"


def readable_tag(name: str) -> str:
    """``name`` if it has a group (a ``/``), else the same name under :data:`LATE_GROUP`."""
    return name if "/" in name else f"{LATE_GROUP}/{name}"


def readable_tags(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` with every tag renamed by :func:`readable_tag`."""
    return {readable_tag(name): value for name, value in metrics.items()}


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger (same arguments, same files) with :func:`readable_tags` applied to every scalar,
    those logged with the hyperparameters included, so the HPARAMS tab finds its metrics under the same tags; and one
    ``epoch`` point per step. A resumed run passes ``purge_step`` (the step of its checkpoint): TensorBoard then
    drops what the stopped process logged after it, and no (tag, step) is shown twice."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # Lightning adds ``epoch`` to every call, so one step would get it two or three times (train epoch end,
        # validation, test): one point per step is kept, the first
        if "epoch" in metrics and step is not None:
            if step == getattr(self, "_epoch_step", None):
                metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            self._epoch_step = step
        if metrics:
            super().log_metrics(readable_tags(metrics), step)

    def log_hyperparams(self, params, metrics=None, step: int | None = None) -> None:
        super().log_hyperparams(params, readable_tags(metrics) if isinstance(metrics, Mapping) else metrics, step)

    @rank_zero_only
    def save(self) -> None:
        """Lightning's save, with ``hparams.yaml`` written through :func:`~art_diffusion.storage.atomic_path` (Lightning
        opens it in place: a full disk left it torn); Lightning then finds it and only flushes the event file."""
        hparams_file = Path(self.log_dir) / self.NAME_HPARAMS_FILE
        if hparams_file.parent.is_dir() and not hparams_file.is_file():
            with atomic_path(hparams_file) as tmp:
                save_hparams_to_yaml(tmp, self.hparams)
        super().save()


def _uint8_hwc(image: torch.Tensor):
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def log_image(loggers: list[Logger], tag: str, image: torch.Tensor, step: int) -> None:
    """Log one [0, 1] ``image`` (channels, height, width) under ``tag`` at ``step`` to each of ``loggers``."""
    for logger in loggers:
        if isinstance(logger, LightningTensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[_uint8_hwc(image)], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, _uint8_hwc(image), key=tag, step=step)
