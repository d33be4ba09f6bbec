"""A test-only callback: records RNG draws at every epoch start and SIGKILLs its own process during epoch
``kill_after + 1``, after epoch ``kill_after``'s checkpoints are on disk; only the first time.

Used by the kill-and-resume test through ``+callbacks.crash._target_=tests.crash.CrashAfterEpoch``.
"""

import json
import os
import random
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch


class CrashAfterEpoch(L.Callback):
    def __init__(self, log_path: str, kill_after: int | None = None) -> None:
        self.log_path = Path(log_path)
        self.kill_after = kill_after

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        draws = {"epoch": trainer.current_epoch, "torch": torch.rand(1).item(), "numpy": float(np.random.rand()),
                 "python": random.random()}
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(draws) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # mid-way through the next epoch: its first batches are lost, as in a real crash
        # (once: the resumed run has this callback in its stored config too)
        if self.kill_after is not None and trainer.current_epoch == self.kill_after + 1 and batch_idx == 1:
            marker = self.log_path.with_suffix(".killed")
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
