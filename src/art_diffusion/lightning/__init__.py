"""What Lightning runs: the LightningModules (``conf/model``), the callbacks that show a run (``conf/callbacks``)
and the loggers (``conf/logger``). Checkpointing has its own package, :mod:`art_diffusion.checkpoints`.

- :class:`NetworkModule`: the shared base (network, loss, optimizer partials, run config in checkpoints).
- :class:`ReconstructionModule`: the article's task, reconstruct the input with the hybrid loss.
- :class:`DiffusionModule`: a DDPM that generates new images from noise.
- :class:`ReconstructionLogger`, :class:`SampleLogger` (on :class:`ImageGridLogger`): image grids to the loggers and
  to PNG files; :class:`GenerationScores`: FD-VGG and KID of a diffusion model's samples.
- :class:`DivergenceGuard`: stops a run at its first non-finite loss (every run has it, see run/train.py).
- :class:`TensorBoardLogger` (tags that read well) and :func:`log_image` (a grid to every logger that shows images).
"""

from art_diffusion.lightning.base_module import NetworkModule
from art_diffusion.lightning.diffusion_module import DiffusionModule
from art_diffusion.lightning.divergence_guard import DivergenceGuard
from art_diffusion.lightning.generation_scores import GenerationScores
from art_diffusion.lightning.image_grids import ImageGridLogger, ReconstructionLogger, SampleLogger
from art_diffusion.lightning.loggers import LATE_GROUP, TensorBoardLogger, log_image, readable_tag, readable_tags
from art_diffusion.lightning.reconstruction_module import ReconstructionModule

__all__ = ["LATE_GROUP", "DiffusionModule", "DivergenceGuard", "GenerationScores", "ImageGridLogger", "NetworkModule",
           "ReconstructionLogger", "ReconstructionModule", "SampleLogger", "TensorBoardLogger", "log_image",
           "readable_tag", "readable_tags"]
