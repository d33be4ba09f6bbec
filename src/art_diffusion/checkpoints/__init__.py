"""Checkpoints, in one place: written atomically, opened without trusting them, resumed in place.

- :mod:`~art_diffusion.checkpoints.loading`: ``torch.load(weights_only=True)`` with clear errors, damaged weights
  refused (:func:`check_tensors`, :func:`check_state_dict`, the zip's CRC-32s), the stored run
  config, :func:`load_module` / :func:`load_net` (a model rebuilt from a checkpoint path alone).
- :mod:`~art_diffusion.checkpoints.registry`: the closed registry of classes a config may instantiate and
  :func:`check_targets`, run before any config is built (and the renames of classes that moved).
- :mod:`~art_diffusion.checkpoints.atomic_io`: :class:`AtomicCheckpointIO`, every Lightning save atomic.
- :mod:`~art_diffusion.checkpoints.callbacks`: :class:`LastCheckpoint`, :class:`RNGStateCheckpoint`,
  :class:`CheckpointOnSigterm`, :class:`RebaseCheckpointPaths`: what makes an interrupted run resumable exactly.
- :mod:`~art_diffusion.checkpoints.resume`: ``resume=RUN_DIR|latest|auto``, the run continued from its last.ckpt.
"""

from art_diffusion.checkpoints.atomic_io import AtomicCheckpointIO
from art_diffusion.checkpoints.callbacks import (
    CheckpointOnSigterm,
    LastCheckpoint,
    RebaseCheckpointPaths,
    RNGStateCheckpoint,
    rebase_paths,
)
from art_diffusion.checkpoints.loading import (
    CONFIG_KEY,
    CheckpointError,
    CorruptCheckpointError,
    DamagedCheckpointError,
    IncompatibleCheckpointError,
    UnsafeCheckpointError,
    WrongModelError,
    check_checkpoint_fits,
    check_state_dict,
    check_tensors,
    load_checkpoint,
    load_module,
    load_net,
    stored_config,
)
from art_diffusion.checkpoints.registry import REGISTRY, UnsafeConfigError, check_targets

__all__ = ["CONFIG_KEY", "REGISTRY", "AtomicCheckpointIO", "CheckpointError", "CheckpointOnSigterm",
           "CorruptCheckpointError", "DamagedCheckpointError", "IncompatibleCheckpointError", "LastCheckpoint",
           "RNGStateCheckpoint", "RebaseCheckpointPaths", "UnsafeCheckpointError", "UnsafeConfigError",
           "WrongModelError", "check_checkpoint_fits", "check_state_dict", "check_targets", "check_tensors",
           "load_checkpoint", "load_module", "load_net", "rebase_paths", "stored_config"]
