"""One process owns a run dir: it holds ``owner.lock`` before Hydra writes anything into the dir, until the run ends.

Hydra writes its record of a call (``.hydra/config.yaml``, ``overrides.yaml``) and opens ``train.log`` in the run dir
before the task starts. If the dir's lock were first taken by the task, a second call aimed at a dir another process
trains in (``hydra.run.dir=`` of a live run, ``resume=`` of one) would be refused only after it had replaced the live
run's record, which ``resume=`` and the hparams table read back later. :class:`RunDirOwner`, a Hydra callback of
train.py (``conf/hydra/default.yaml``), takes the lock when Hydra's run starts, before those writes: a refused call
leaves the dir as it found it. There too, a new run (no ``resume=``) aimed at a dir that holds another run's
checkpoints is refused (it used to train into it, replacing that run's last.ckpt). ``train()`` called without Hydra
(tests, notebooks) claims the dir itself (:func:`owned`), with the same lock and the same message.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from art_diffusion.checkpoints.resume import starts_fresh
from art_diffusion.run.run_dir import METRICS_FILE, OWNER_LOCK
from art_diffusion.storage.locks import InUseError, claim

#: Run dirs this process holds since Hydra's run started (:class:`RunDirOwner`), by resolved path.
_held: dict[Path, contextlib.ExitStack] = {}
#: Why the sweep jobs of this process were refused their dirs (scripts/train.py then exits with status 2).
refused_jobs: list[str] = []


def in_multirun() -> bool:
    """A job of a sweep (``-m``), whose dir Hydra made for it before the job starts."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def owns_run_dirs() -> bool:
    """The process that launched the run: DDP ranks other than it (Lightning's, or SLURM's tasks) are part of the same
    run and take no run dir."""
    from lightning.pytorch.utilities import rank_zero_only  # the rank from the environment, as Lightning reads it

    from art_diffusion.run.cluster.ddp import is_spawned_rank

    return rank_zero_only.rank == 0 and not is_spawned_rank()


class RunDirTaken(InUseError):
    """The run dir is another run's: a live process trains in it, or it holds a trained run that a new run would
    overwrite. The refused job writes nothing into it (not even its job.json)."""


@contextlib.contextmanager
def claim_run_dir(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock for a ``with`` block, or raise :class:`RunDirTaken` naming the live holder."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(claim(
                directory / OWNER_LOCK, f"The run dir {directory}",
                "Wait for that run to end or stop it; two processes training into one run dir would interleave "
                "checkpoints and TensorBoard curves. To train other settings from it, start a new run with "
                f"ckpt_path={directory / 'checkpoints' / 'last.ckpt'}."))
        except InUseError as error:
            raise RunDirTaken(str(error)) from None
        yield


def refuse_a_trained_dir(directory: Path) -> None:
    """A new run (no ``resume=``) trains in a dir of its own: one that holds another run's checkpoints or final
    metrics would get its last.ckpt, metrics.json and TensorBoard curves mixed with the new run's."""
    found = sorted(str(p.relative_to(directory)) for p in (*directory.glob("checkpoints/*.ckpt"),
                                                           directory / METRICS_FILE) if p.is_file())
    if found:
        key, default = (("hydra.sweep.dir", "outputs/multirun/<date>/<time>") if in_multirun()
                        else ("hydra.run.dir", "outputs/<date>/<time>"))
        raise RunDirTaken(f"The run dir {directory} holds a run already ({', '.join(found[:3])}"
                          f"{', ...' if len(found) > 3 else ''}). To continue it: resume={directory} (or resume=auto); "
                          f"to start a new run, give a new {key} or leave it out ({default}).")


def owned(directory: Path) -> contextlib.AbstractContextManager:
    """``directory`` owned for a block: already, when this process took it as Hydra's run started; else claimed."""
    return contextlib.nullcontext() if directory.resolve() in _held else claim_run_dir(directory)


def held(directory: Path) -> bool:
    """This process took ``directory`` when Hydra's run started (a single run's dir is its own from then on)."""
    return Path(directory).resolve() in _held


def release_all() -> None:
    """Give back every run dir held since Hydra's run started (at exit, or before a failed call's dir is removed)."""
    while _held:
        _held.popitem()[1].close()


class _Deferred(logging.Handler):
    """Keeps the records logged before Hydra has set up logging, to be logged again once it has."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RunDirOwner(Callback):
    """Takes the run dir of a single run (``hydra.run.dir``) before Hydra writes into it, or ends the call with one
    ``error:`` line and exit status 2; gives it back when the run ends (or the process exits). A multirun's jobs each
    get a new dir, claimed by the job. DDP ranks other than the launching one (Lightning's, or SLURM's tasks) are
    part of the same run and take nothing."""

    def __init__(self) -> None:
        self.deferred: _Deferred | None = None

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if not owns_run_dirs():
            return
        try:
            directory = Path(os.path.abspath(str(config.hydra.run.dir)))
        except Exception:  # an interpolation that fails (resume= of no run): Hydra reports it right after
            return
        stack = contextlib.ExitStack()
        # "Taking over ..." from a dead owner: kept, and logged once Hydra has opened the run's log (on_job_start)
        lock_log, self.deferred = logging.getLogger(claim.__module__), _Deferred()
        lock_log.addHandler(self.deferred)
        lock_log.propagate = False
        try:
            stack.enter_context(claim_run_dir(directory))
            if starts_fresh(config.get("resume")):
                refuse_a_trained_dir(directory)
        except RunDirTaken as error:
            stack.close()
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            lock_log.removeHandler(self.deferred)
            lock_log.propagate = True
        if not _held:
            atexit.register(release_all)
        _held[directory.resolve()] = stack

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        """Hydra has configured logging (the run's train.log): what the claim logged goes there now."""
        deferred, self.deferred = self.deferred, None
        for record in deferred.records if deferred else []:
            logging.getLogger(record.name).handle(record)

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        """The run is over (Hydra calls this after a task that returned or raised): a second run in this process,
        as scripts run in-process do, takes its dir afresh."""
        release_all()
