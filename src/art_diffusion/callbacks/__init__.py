"""Lightning callbacks: image grids (one base, two kinds) and what makes a run resumable.

- :class:`ImageGridLogger`: the base that writes a grid to the loggers and to PNG files.
- :class:`ReconstructionLogger`: fixed validation images above the module's ``log_images`` rows.
- :class:`SampleLogger`: images a diffusion model generates from fixed noise.
- :class:`GenerationScores`: FD-VGG and KID of a diffusion model's samples against held-out images.
- :class:`RNGStateCheckpoint`, :class:`CheckpointOnSigterm`, :class:`LastCheckpoint`: exact resume, a checkpoint
  before a scheduler's kill, last.ckpt after every epoch.
- :class:`RebaseCheckpointPaths`: a moved run dir keeps its checkpoint bookkeeping on resume.
"""

from art_diffusion.callbacks.crash_safety import CheckpointOnSigterm, LastCheckpoint, RNGStateCheckpoint
from art_diffusion.callbacks.generation_scores import GenerationScores
from art_diffusion.callbacks.image_grid import ImageGridLogger
from art_diffusion.callbacks.rebase_paths import RebaseCheckpointPaths
from art_diffusion.callbacks.reconstructions import ReconstructionLogger
from art_diffusion.callbacks.samples import SampleLogger

__all__ = ["CheckpointOnSigterm", "GenerationScores", "ImageGridLogger", "LastCheckpoint", "RNGStateCheckpoint",
           "RebaseCheckpointPaths", "ReconstructionLogger", "SampleLogger"]
