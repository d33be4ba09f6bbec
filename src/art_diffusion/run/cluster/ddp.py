"""Lightning's DDP under Hydra: the extra ranks join the job's run dir instead of starting runs (or sweeps) of
their own.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by re-running the script with the same ``sys.argv`` (adding
``hydra.run.dir=<HydraConfig run.dir>``). Under Hydra that goes wrong twice: in a multirun the argv still says
``-m a=1,2`` so every rank would run the whole sweep, and ``run.dir`` is not the sweep job's directory. So, around each
job, rank 0 (i) rewrites ``sys.argv`` to exactly this job in run mode and (ii) exports the job's directory in
``RUN_DIR_ENV``, which ``hydra.run.dir`` (conf/hydra/default.yaml) resolves to; the ranks inherit the environment.
Lightning also leaves the process group and its ``MASTER_PORT`` behind after a fit; the next job of a sweep running
in the same process would join that dead group, so both are cleared when the job ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig

#: Set by rank 0 for the duration of a job; conf/hydra/default.yaml makes hydra.run.dir resolve to it.
RUN_DIR_ENV = "ART_DIFFUSION_RUN_DIR"
_CONFIG_FLAGS = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir")


def launched_on_every_node() -> bool:
    """Whether a launcher that starts every node's processes started this one (Lightning's own detection: SLURM,
    torchrun, LSF; or NODE_RANK and MASTER_ADDR set on each node, by hand or by Kubeflow, whose detect() Lightning
    does not implement). Without one, a run with ``trainer.num_nodes > 1`` would wait forever for the other nodes."""
    from lightning.fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment

    launched = any(env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment))
    return launched or ("NODE_RANK" in os.environ and "MASTER_ADDR" in os.environ)


def is_spawned_rank() -> bool:
    """True in the processes Lightning's DDP launcher starts (rank 0 runs the job itself)."""
    return int(os.environ.get("LOCAL_RANK", 0)) > 0 and RUN_DIR_ENV in os.environ


def _config_flags(argv: list[str]) -> list[str]:
    """The --config-path/--config-name/--config-dir flags of ``argv``, in both ``-cn x`` and ``-cn=x`` forms."""
    flags, args = [], iter(argv)
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in _CONFIG_FLAGS:
            flags += [arg] if "=" in arg else [arg, next(args, "")]
    return flags


def job_argv(argv: list[str]) -> list[str]:
    """The command line of this one Hydra job in run mode: same script and config, this job's overrides."""
    return [argv[0], *_config_flags(argv[1:]), *HydraConfig.get().overrides.task, "hydra.mode=RUN"]


@contextmanager
def job_scope(output_dir: str | Path) -> Iterator[None]:
    """Around one job on rank 0: DDP ranks started inside it join ``output_dir``; the environment is restored after."""
    if is_spawned_rank() or not HydraConfig.initialized():
        yield
        return
    saved_environ, saved_argv = dict(os.environ), list(sys.argv)
    os.environ[RUN_DIR_ENV] = str(Path(output_dir).resolve())
    sys.argv = job_argv(saved_argv)
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.argv = saved_argv
