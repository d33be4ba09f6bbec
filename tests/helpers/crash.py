"""Test-only callbacks that crash a run the hard way. CrashAfterEpoch: records RNG draws at every epoch start and
SIGKILLs its own process during epoch ``kill_after + 1``, after epoch ``kill_after``'s checkpoints are on disk;
only the first time. KillDuringSave: a SIGKILL in the middle of a save. FillDiskBeforeSave: a full disk.

Used by the kill-and-resume test through ``+callbacks.crash._target_=tests.helpers.crash.CrashAfterEpoch``.
"""

import json
import os
import random
import resource
import shutil
import signal
import sys
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


def _checkpoint_write(directory: Path, event: str, args: tuple) -> str | None:
    """The path a write-open or a rename into ``directory`` is about, from a ``sys.addaudithook`` event."""
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        writing = ("w" in mode or "a" in mode or "+" in mode) if isinstance(mode, str) else bool(flags & 3)
        path = os.fsdecode(args[0])
        return path if writing and Path(path).parent == directory else None
    if event == "os.rename" and Path(os.fsdecode(args[1])).parent == directory:
        return os.fsdecode(args[1])
    return None


class KillDuringSave(L.Callback):
    """SIGKILLs its own process in the middle of a checkpoint save of epoch >= 1: the k-th run of a resumed chain
    at ``moments[k]`` (then no more), as a ``kill -9`` or an OOM killer would.

    ``open``: just before a checkpoint file is opened for writing (the audit event comes first); ``write``: half-way
    through writing it: once it is opened, a file size limit (RLIMIT_FSIZE) of half a checkpoint stops the write
    there, and the kernel's SIGXFSZ is turned into the SIGKILL; ``replace``: at a rename into the checkpoint
    directory. Kills are counted in ``state_path``.
    """

    def __init__(self, dirpath: str, state_path: str, moments: list[str]) -> None:
        self.dirpath, self.state_path, self.moments = Path(dirpath).resolve(), Path(state_path), list(moments)
        self.armed, self.moment = False, None
        sys.addaudithook(self._audit)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        kills = len(self.state_path.read_text().splitlines()) if self.state_path.exists() else 0
        self.moment = self.moments[kills] if kills < len(self.moments) else None
        self.armed = self.moment is not None and trainer.current_epoch >= 1
        self.last_size = (self.dirpath / "last.ckpt").stat().st_size if self.armed else 0

    def _kill(self, path: str) -> None:
        with open(self.state_path, "a") as fh:
            fh.write(f"{self.moment} {path}\n")
        os.kill(os.getpid(), signal.SIGKILL)

    def _audit(self, event: str, args: tuple) -> None:
        if not self.armed or event not in ("open", "os.rename"):
            return
        path = _checkpoint_write(self.dirpath, event, args)
        if path is None or str(self.state_path) == path:
            return
        if (self.moment, event) in (("open", "open"), ("replace", "os.rename")):
            self.armed = False
            self._kill(path)
        elif (self.moment, event) == ("write", "open"):  # from now on, no file may grow past half a checkpoint
            self.armed = False
            signal.signal(signal.SIGXFSZ, lambda *_: self._kill(path))
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.last_size // 2, hard))


class FillDiskBeforeSave(L.Callback):
    """At the end of epoch ``epoch``'s validation, before the checkpoints are saved (Lightning runs checkpoint
    callbacks last), fills the run dir's file system so that less than half a checkpoint still fits."""

    def __init__(self, filler: str, epoch: int = 1, leave: int | None = None) -> None:
        self.filler, self.epoch, self.leave = Path(filler), epoch, leave

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch or trainer.sanity_checking:
            return
        last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        leave = last.stat().st_size // 2 if self.leave is None else self.leave  # leave=0: not even a record fits
        free = shutil.disk_usage(self.filler.parent).free
        with open(self.filler, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, max(free - leave, 1))
