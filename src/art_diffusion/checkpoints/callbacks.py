"""The checkpoint callbacks that make an interrupted run resumable exactly: last.ckpt after every epoch, RNG states in
every checkpoint, a checkpoint on SIGTERM, and a moved run dir's bookkeeping rebased on resume."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every epoch, whatever the monitored metric did (configure ``filename: last``).

    Lightning's ``save_last`` on a monitoring ModelCheckpoint rewrites last.ckpt only in epochs that save a new best,
    so after a plateau it lags behind and a resume would redo epochs. This is a plain unmonitored ModelCheckpoint
    with a state key of its own: Lightning refuses two ModelCheckpoints with equal keys (an every-epoch periodic one).
    """

    @property
    def state_key(self) -> str:
        return self._generate_state_key(kind="last.ckpt", every_n_epochs=self._every_n_epochs)


class RNGStateCheckpoint(L.Callback):
    """Stores the python, numpy, torch (and CUDA) RNG states in each checkpoint and restores them on resume.

    Lightning restores weights, optimizer, scheduler and loop counters but not the global RNGs, so anything
    random after a restart (dropout, augmentation) would differ from the uninterrupted run. The states are
    re-applied at ``on_train_start``: after the sanity-check validation, which must not shift them.
    Only plain data and tensors are stored, so the checkpoint still loads with ``weights_only=True``.
    Under DDP the checkpoint holds rank 0's states and every rank restores those.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._to_restore = self._to_restore, None
        if state is None:
            return
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        log.info("Restored the python, numpy and torch RNG states from the checkpoint")


class CheckpointOnSigterm(L.Callback):
    """Saves ``dirpath/filename`` when training stops on SIGTERM, the signal batch schedulers send before a kill.

    Lightning already turns SIGTERM into a clean stop after the current batch (``SIGTERMException``); this adds the
    checkpoint, so ``python scripts/train.py resume=RUN_DIR`` continues from the interrupted step rather than from
    the last epoch end.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.path)
        log.warning("SIGTERM: saved %s (epoch %d, step %d) before exiting", self.path, trainer.current_epoch,
                    trainer.global_step)


def rebase_paths(node: Any, old: str, new: str) -> Any:
    """Every path under the run's old location moved to its new one (a run dir copied to another machine)."""
    if isinstance(node, dict):
        return {rebase_paths(k, old, new): rebase_paths(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [rebase_paths(v, old, new) for v in node]
    if isinstance(node, str) and (node == old or node.startswith(old.rstrip("/") + "/")):
        return new + node[len(old.rstrip("/")):]
    return node


def _outside(node: Any, root: str) -> bool:
    return isinstance(node, str) and os.path.isabs(node) and \
        os.path.commonpath([os.path.normpath(node), os.path.normpath(root)]) != os.path.normpath(root)


def drop_paths_outside(node: Any, root: str) -> Any:
    """``node`` without the absolute paths outside ``root`` (as values: ``""``; as keys: the entry is dropped)."""
    if isinstance(node, dict):
        return {k: drop_paths_outside(v, root) for k, v in node.items() if not _outside(k, root)}
    if isinstance(node, list):
        return [drop_paths_outside(v, root) for v in node]
    return "" if _outside(node, root) else node


class RebaseCheckpointPaths(L.Callback):
    """On resume: points the paths in the checkpoint's callback states at the run dir's location (a moved run dir),
    and drops any that lie outside it.

    Lightning's ModelCheckpoint restores its best score and file names only when its saved ``dirpath`` equals the
    current one; otherwise it starts afresh and writes ``best-v1.ckpt`` beside the old ``best.ckpt``. It also
    deletes the previous best file when it saves a new one, so a path the file names outside the run dir (an edited
    checkpoint) must never reach it.
    """

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if "callbacks" in checkpoint:
            checkpoint["callbacks"] = drop_paths_outside(rebase_paths(checkpoint["callbacks"], self.old, self.new),
                                                         self.new)
