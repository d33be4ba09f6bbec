"""Every checkpoint Lightning saves (ModelCheckpoint, the SIGTERM checkpoint, ``trainer.save_checkpoint``) is
written the project's one atomic way: :func:`art_diffusion.storage.save_torch`
(through :func:`~art_diffusion.storage.atomic_path`).

Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction: a temporary file in the *system* temp
dir, then a move. When the run dir is on another file system (a tmpfs, a network disk) the move is a copy, and a
``kill -9`` during it leaves a truncated ``last.ckpt``. Here the bytes go to a temporary file beside the final one,
are fsynced and renamed: a killed save leaves only a ``*.tmp`` (removed on resume), a full disk one message.

Weights holding NaN or inf are never saved (:class:`~art_diffusion.DivergedError`): a diverged run must not replace
a good ``last.ckpt`` or ``best.ckpt`` with a poisoned one. The run's divergence guard normally stops it first.
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH

from art_diffusion import DivergedError
from art_diffusion.checkpoints.loading import non_finite
from art_diffusion.storage import save_torch


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on any local file system; loading is unchanged."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        bad = list(non_finite(checkpoint.get("state_dict", {})))
        if bad:
            raise DivergedError(f"Refusing to save {path}: the weights hold NaN or inf ({', '.join(bad[:3])}"
                                f"{', ...' if len(bad) > 3 else ''}); training diverged. The previous checkpoint "
                                "there, if any, is intact. Lower optim.lr or set trainer.gradient_clip_val.")
        save_torch(checkpoint, path)  # serialised first: a pickling error must not leave even a temporary file
