"""One Hydra job of scripts/train.py: train, record how it went in the run dir, return the metric sweepers optimise.

A single run fails loudly (the exception propagates, non-zero exit). In a multirun a failing job must not stop the
sweep: its error goes to ``error.txt`` and ``job.json`` in its run dir, the sweep summary lists it, and the job
returns NaN, which Optuna records as a failed trial.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import traceback
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from art_diffusion import ConfigError, DivergedError
from art_diffusion.data.datamodule import skipped_stages
from art_diffusion.run import resolvers  # noqa: F401  (a submitit worker resolves the job's config after unpickling this)
from art_diffusion.run.cluster.ddp import job_scope
from art_diffusion.run.run_dir import ERROR_FILE, JOB_FILE
from art_diffusion.run.run_dir_owner import RunDirTaken, held, in_multirun, refused_jobs
from art_diffusion.run.train import Interrupted, StopSignal, fit_and_test, own_run_dir, prepare_config, stop_signals
from art_diffusion.storage import atomic_write, write_json

log = logging.getLogger(__name__)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float:
    """The final value of ``cfg.optimized_metric``; NaN when none is named or its stage was skipped on purpose."""
    name = cfg.get("optimized_metric")
    if name is None:
        return math.nan
    if name not in metrics:
        skipped = skipped_stages(cfg.data.get("val_root"), cfg.data.get("val_fraction", 0.1),
                                 cfg.data.get("test_fraction", 0.1)) | (set() if cfg.get("test") else {"test"})
        if name.split("/")[0] in skipped:
            log.warning("optimized_metric=%s: that stage was skipped, so this run returns NaN.", name)
            return math.nan
        raise ConfigError(f"optimized_metric={name!r} is not among this run's final metrics {sorted(metrics)} "
                          f"(they are in {Path(cfg.paths.output_dir) / 'metrics.json'}); set optimized_metric to "
                          "one of them (e.g. optimized_metric=val/loss).")
    return metrics[name]


def _status(error: BaseException) -> str:
    if isinstance(error, DivergedError):
        return "diverged"
    if isinstance(error, (Interrupted, StopSignal, KeyboardInterrupt)):
        return "interrupted"
    return "failed"


#: What gloo and NCCL say when another rank's process went away mid-collective (its node failed, or it was killed).
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted")


def _peer_lost(error: BaseException) -> bool:
    """A distributed job under SLURM whose collective failed because a peer is gone: not this job's failure to
    report (a sweep would collect it as the job's result before SLURM requeues the job), but the end of this
    attempt, like a SIGTERM."""
    return bool(os.environ.get("SLURM_JOB_ID")) and isinstance(error, RuntimeError) and \
        any(text in str(error) for text in _PEER_LOST)


def _best_effort(write, *args, **kwargs) -> None:
    """``write(*args)`` while recording an error: its own failure (a full disk, the very error being recorded, or a
    run dir gone) is one warning, never a replacement of the error it records, which the caller re-raises."""
    try:
        write(*args, **kwargs)
    except Exception as failure:
        log.warning("Could not record how this job ended (%s: %s); the error it records follows.",
                    type(failure).__name__, str(failure).split(";")[0])


def _record(output_dir: Path, cfg: DictConfig, start: float, status: str, value: float | None = None,
            error: BaseException | None = None) -> None:
    """job.json; with the host (and, under SLURM, the job id and node) that ran it, since a sweep's jobs may run on
    several nodes. Called while handling an error, through :func:`_best_effort`."""
    if rank_zero_only.rank == 0:
        write_json(output_dir / JOB_FILE, {
            "status": status, "error": None if error is None else f"{type(error).__name__}: {error}",
            "optimized_metric": cfg.get("optimized_metric"), "value": value, "wall_time_s": time.monotonic() - start,
            "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_node": os.environ.get("SLURMD_NODENAME")})


def run_job(cfg: DictConfig) -> float:
    """Train with ``cfg``; returns the final value of ``cfg.optimized_metric`` (NaN for a failed job of a sweep).

    ``job.json`` in the run dir says how the job ended: ``completed``, ``failed``, ``diverged`` (a non-finite loss
    stopped it) or ``interrupted`` (SIGTERM or Ctrl-C; exit 143 or 130 with the resume command). A single run writes
    it only once it owns its run dir (a run refused by another's lock leaves that run's files alone); a sweep job's
    dir is its own, unless it is refused as another run's (:class:`~art_diffusion.run.run_dir_owner.RunDirTaken`: a
    live job's, or a trained one without ``resume=``), and then nothing is written into it. A resumed run reports the
    metric of the config it resumed, not of today's defaults.
    """
    output_dir = Path(cfg.paths.output_dir)
    start = time.monotonic()
    owned = False
    try:
        with stop_signals(), job_scope(output_dir):  # SIGTERM or Ctrl-C at any moment: a clean stop (see there)
            prepared = prepare_config(cfg)
            with own_run_dir(prepared):
                owned, cfg = True, prepared
                value = optimized_value(prepared, fit_and_test(prepared))
    except (Exception, KeyboardInterrupt, StopSignal) as error:
        # a job refused its dir (another run's) writes nothing into it; a sweep job's dir is otherwise its own. A
        # single run stopped before it owned its dir (in prepare_config) says so in the dir it holds since Hydra's
        # start (run_dir_owner.RunDirOwner); a refused call (a config error) leaves that dir to be discarded.
        stopped = isinstance(error, (StopSignal, KeyboardInterrupt, Interrupted))
        ours = owned or (stopped and held(output_dir)) or (in_multirun() and not isinstance(error, RunDirTaken))
        if isinstance(error, (StopSignal, KeyboardInterrupt)):  # everything has unwound: a checkpoint is final
            error = Interrupted(getattr(error, "signal_name", "SIGINT"), getattr(error, "exit_code", 130),
                                str(output_dir))
        if _peer_lost(error):  # the job's allocation is ending: SLURM decides whether it runs again, not this rank
            if ours:
                _best_effort(_record, output_dir, cfg, start, "interrupted", error=error)
            log.warning("A peer process of this job is gone (%s): this rank stops without a result. Under SLURM a "
                        "node failure requeues the job and resume=auto continues it from last.ckpt.",
                        str(error).splitlines()[0][:300])
            raise SystemExit(143) from None
        if ours:
            _best_effort(_record, output_dir, cfg, start, _status(error), error=error)
        if isinstance(error, (Interrupted, KeyboardInterrupt)):
            stop = error if isinstance(error, Interrupted) else Interrupted("SIGINT", 130, str(output_dir))
            log.warning("%s", stop)
            raise SystemExit(stop.exit_code) from None
        if not (in_multirun() and rank_zero_only.rank == 0):
            raise
        if not ours:
            log.error("This job was refused its dir; the sweep goes on. %s", error)
            refused_jobs.append(str(error))
            return math.nan
        log.exception("This job %s; the sweep goes on. Error saved in %s", _status(error), output_dir / ERROR_FILE)
        _best_effort(atomic_write, output_dir / ERROR_FILE, traceback.format_exc())
        return math.nan
    _record(output_dir, cfg, start, "completed", value=value)
    return value
