"""log_image: an image grid to every logger that can show images, each through its own API.

TensorBoard (``add_image``), Weights & Biases (``log_image``) and MLflow (``log_image`` with a key and a step, its
UI's image slider) show the grids next to the curves. Loggers without images (CSV) have the PNG files the image
callbacks write in the run dir.
"""

from __future__ import annotations

import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger


def _uint8_hwc(image: torch.Tensor):
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def log_image(loggers: list[Logger], tag: str, image: torch.Tensor, step: int) -> None:
    """Log one [0, 1] ``image`` (channels, height, width) under ``tag`` at ``step`` to each of ``loggers``."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[_uint8_hwc(image)], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, _uint8_hwc(image), key=tag, step=step)
