"""Preempted and timed-out SLURM jobs come back by themselves: one mechanism, submitit's, with the checkpoint first.

How a job of ``python scripts/train.py -m hydra/launcher=slurm resume=auto ...`` survives being stopped:

1. SLURM stops a job with SIGTERM (preemption, ``scontrol requeue``, ``scancel``, the time limit). Lightning turns
   SIGTERM into a clean stop after the current batch, and ``CheckpointOnSigterm`` saves ``last.ckpt``. When SLURM
   itself requeues the job (preemption in requeue mode, ``scontrol requeue``), it simply starts again.
2. A time limit is not requeued by SLURM. submitit asks for ``sbatch --signal=USR2@<signal_delay_s>`` and, on that
   signal, resubmits the same Hydra job (hydra-submitit-launcher's ``checkpoint()``) with ``scontrol requeue``, at
   most ``max_num_timeout`` times. :func:`checkpoint_before_requeue` puts the checkpoint first: USR2 is turned into
   the SIGTERM stop of step 1, and submitit's handler runs once ``last.ckpt`` is written and ``fit`` has returned.
3. The requeued job runs the same job in the same job dir; ``resume=auto`` continues it from ``last.ckpt``.

Lightning's own SLURM requeue (``SLURMEnvironment(auto_requeue=True)``: SIGUSR1, an ``hpc_ckpt_*.ckpt`` saved from
inside the signal handler, restored behind the config's back) is switched off (:func:`cluster_plugins`), so there
is one way a job comes back, and one checkpoint it comes back from.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


def submitit_signal() -> signal.Signals | None:
    """The signal submitit checkpoints and requeues on (USR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise), or
    None outside a submitit job. Ranks that Lightning spawns inherit the job's environment and count as inside."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()


@contextmanager
def checkpoint_before_requeue() -> Iterator[None]:
    """Around ``trainer.fit`` in a submitit job: submitit's signal stops training like SIGTERM (``last.ckpt`` saved
    at the next batch boundary), then submitit's own handler resubmits and requeues the job."""
    signum = submitit_signal()
    if signum is None:
        yield
        return
    submitit_handler = signal.getsignal(signum)
    received: list[int] = []

    def stop_training(number: int, frame) -> None:
        log.warning("Got %s: saving last.ckpt at the next batch, then requeueing", signal.Signals(number).name)
        received.append(number)
        signal.raise_signal(signal.SIGTERM)  # Lightning's handler: stop after this batch (see CheckpointOnSigterm)

    signal.signal(signum, stop_training)
    try:
        yield
    except SystemExit:  # Lightning's SIGTERMException: the checkpoint is on disk, fit has unwound
        if received and callable(submitit_handler):
            signal.signal(signum, submitit_handler)
            submitit_handler(received[0], None)  # resubmits, scontrol requeue, exits (or says why it will not)
        raise
    finally:
        signal.signal(signum, submitit_handler)


def cluster_plugins() -> list:
    """Trainer plugins: under SLURM, Lightning's SLURM environment without its own requeue (see the module doc)."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
