"""The experiment loggers' side of the project: TensorBoard tags that read well, and image grids every logger shows.

- :class:`TensorBoardLogger`: Lightning's, with the run's bookkeeping tags filed after the losses and metrics.
- :func:`log_image`: one image to every logger of a Trainer that can show images (TensorBoard, W&B, MLflow).
"""

from art_diffusion.loggers.images import log_image
from art_diffusion.loggers.tensorboard import LATE_GROUP, TensorBoardLogger, readable_tags

__all__ = ["LATE_GROUP", "TensorBoardLogger", "log_image", "readable_tags"]
