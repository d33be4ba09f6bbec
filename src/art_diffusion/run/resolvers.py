"""The OmegaConf resolvers the configs use, all in :data:`RESOLVERS`, registered in one place: the bottom of this
module. Whatever composes or resolves a config imports it first: every script (through ``run.cli``), a sweep job
unpickled in a submitit worker (through ``run.job``), the tests. Torch-heavy helpers are imported lazily, so composing
a config stays fast."""

from pathlib import Path

from omegaconf import OmegaConf


def sweep_job_dirname(sweep_dir: str, overrides, num: int) -> str:
    """A sweep job's directory name: its swept values (the sweep dir's sweep.yaml says which keys are swept)."""
    from art_diffusion.run.sweeps.record import job_dirname, read_sweep

    record = read_sweep(sweep_dir)
    as_typed = OmegaConf.to_container(overrides, resolve=False) if OmegaConf.is_config(overrides) else overrides
    return job_dirname(record and record["swept"], list(as_typed), num)


def sqlite_url(path: str) -> str:
    """A SQLAlchemy URL for the SQLite file ``path``, whose folder is created here.

    The Optuna sweeper opens its study before Hydra creates the sweep dir, and SQLite cannot create folders.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def resume_run_dir(resume, default: str, mode=None) -> str:
    """``hydra.run.dir``: a DDP rank's job dir (``ART_DIFFUSION_RUN_DIR``, see run/cluster/ddp.py), the resumed run's
    dir, or a new dir of its own (made now); a multirun never uses it, so nothing is made then."""
    import os

    from art_diffusion import UserError
    from art_diffusion.checkpoints.resume import run_dir  # lazy: keeps config composition free of torch imports
    from art_diffusion.run.cluster.ddp import RUN_DIR_ENV

    if os.environ.get(RUN_DIR_ENV):
        return os.environ[RUN_DIR_ENV]
    if "MULTIRUN" in str(mode):
        return default
    try:
        return run_dir(resume, default)
    except UserError:  # a wrong resume=: train() raises it again as one message, where the scripts catch it
        return default


def resume_hydra_subdir(resume, stamp: str, run_dir: str | None = None) -> str:
    from art_diffusion.checkpoints.resume import hydra_subdir

    return hydra_subdir(resume, stamp, run_dir)


def slurm_gpus(accelerator: str, devices) -> int | None:
    """GPUs per node that conf/hydra/launcher/slurm.yaml asks SLURM for: its devices; none (no --gpus-per-node) for
    a CPU trainer."""
    return None if accelerator == "cpu" else int(devices)


def evaluation_dir(ckpt_path) -> str:
    """``<run dir of the first checkpoint>/evaluation``: conf/evaluate.yaml's default output_dir."""
    from art_diffusion.tools.evaluate import default_output_dir

    return default_output_dir(ckpt_path)


def model_metric(target) -> str:
    """The final metric the LightningModule ``target`` declares as its own (its ``OPTIMIZED_METRIC``: val/psnr for
    reconstruction, val/loss for model=ddpm): conf/train.yaml's default ``optimized_metric``."""
    from art_diffusion import lightning  # lazy, like the others; only our own classes are looked up

    name = str(target).removeprefix("art_diffusion.lightning.")
    return getattr(getattr(lightning, name, None), "OPTIMIZED_METRIC", "val/loss")


RESOLVERS = {
    "sweep_job_dirname": sweep_job_dirname,
    "sqlite_url": sqlite_url,
    "resume_run_dir": resume_run_dir,
    "resume_hydra_subdir": resume_hydra_subdir,
    "evaluation_dir": evaluation_dir,
    "model_metric": model_metric,
    "slurm_gpus": slurm_gpus,
}


def register_resolvers() -> None:
    """Register every resolver of :data:`RESOLVERS` (idempotent)."""
    for name, resolver in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)


register_resolvers()
