"""Stop a run at its first non-finite loss, before anything of it is saved.

A loss that becomes NaN or inf (a learning rate too large, an overflow in reduced precision) poisons the weights at
the next optimizer step; training on would only save checkpoints full of NaN under ``last.ckpt`` and ``best.ckpt`` and
end with exit 0. :class:`DivergenceGuard` checks the training loss after every batch and the validation losses at
the end of every validation, and raises :class:`~art_diffusion.DivergedError` (epoch, step, the loss, a hint) before
the checkpoint callbacks run. Lightning runs checkpoint callbacks after the others, so the epoch's checkpoints are
never written; :class:`~art_diffusion.checkpoints.atomic_io.AtomicCheckpointIO` refuses non-finite weights as a
second line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch

from art_diffusion import DivergedError


def _value(loss) -> float:
    return float(loss.detach().float().cpu()) if isinstance(loss, torch.Tensor) else float(loss)


class DivergenceGuard(L.Callback):
    """Raise :class:`~art_diffusion.DivergedError` at the first non-finite training or validation loss.

    ``hint``: what the user can change (the run's learning rate and gradient clipping), appended to the message.
    Under DDP every rank takes the same decision (a NaN on one rank stops all of them together).
    """

    def __init__(self, hint: str = "", last_checkpoint: str | None = None) -> None:
        self.hint = hint
        self.last_checkpoint = last_checkpoint

    def _stop_if(self, trainer: L.Trainer, bad: bool, name: str, value: float, where: str) -> None:
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        shown = "a non-finite value on another rank" if math.isfinite(value) else f"{value}"
        last = self.last_checkpoint
        kept = (f"its last good checkpoint is {last}" if last and Path(last).is_file() else "no checkpoint was saved")
        raise DivergedError(f"Training diverged: {name} = {shown} at epoch {trainer.current_epoch}, {where} (global "
                            f"step {trainer.global_step}). The run stopped before saving anything non-finite; {kept}. "
                            f"{self.hint}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        value = math.nan if loss is None else _value(loss)
        self._stop_if(trainer, loss is not None and not math.isfinite(value), "train/loss", value, f"batch {batch_idx}")

    def on_validation_end(self, trainer, pl_module) -> None:
        losses = {name: _value(v) for name, v in trainer.callback_metrics.items()
                  if name.startswith("val/") and "loss" in name}
        bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
        name, value = next(iter(bad.items()), ("val/loss", 0.0))
        self._stop_if(trainer, bool(bad), name, value, "sanity check" if trainer.sanity_checking else "validation")
