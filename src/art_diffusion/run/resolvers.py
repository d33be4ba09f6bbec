"""The OmegaConf resolvers the configs use, all in :data:`RESOLVERS`, registered in one place: the bottom of this
module. Whatever composes or resolves a config imports it first: every script (through ``run.cli``), a sweep job
unpickled in a submitit worker (through ``run.job``), the tests. Torch-heavy helpers are imported lazily, so composing
a config stays fast."""

import hashlib
from pathlib import Path

from omegaconf import OmegaConf

MAX_DIRNAME = 120  # well under the 255 bytes most filesystems allow for one path component


def safe_dirname(name: str) -> str:
    """A sweep job's directory name: its overrides, flattened, and shortened with a hash when too long."""
    name = name.replace("/", "_") or "default"
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_DIRNAME - 11]}-{digest}"


def sqlite_url(path: str) -> str:
    """A SQLAlchemy URL for the SQLite file ``path``, whose folder is created here.

    The Optuna sweeper opens its study before Hydra creates the sweep dir, and SQLite cannot create folders.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def resume_run_dir(resume, default: str) -> str:
    from art_diffusion.run.resume import run_dir  # lazy: keeps config composition free of torch imports

    return run_dir(resume, default)


def resume_hydra_subdir(resume, stamp: str, run_dir: str | None = None) -> str:
    from art_diffusion.run.resume import hydra_subdir

    return hydra_subdir(resume, stamp, run_dir)


def slurm_gpus(accelerator: str, devices) -> int | None:
    """GPUs per node that conf/hydra/launcher/slurm.yaml asks SLURM for: its devices; none (no --gpus-per-node) for
    a CPU trainer."""
    return None if accelerator == "cpu" else int(devices)


def evaluation_dir(ckpt_path) -> str:
    """``<run dir of the first checkpoint>/evaluation``: conf/evaluate.yaml's default output_dir."""
    from art_diffusion.tools.evaluate import default_output_dir

    return default_output_dir(ckpt_path)


RESOLVERS = {
    "safe_dirname": safe_dirname,
    "sqlite_url": sqlite_url,
    "resume_run_dir": resume_run_dir,
    "resume_hydra_subdir": resume_hydra_subdir,
    "evaluation_dir": evaluation_dir,
    "slurm_gpus": slurm_gpus,
}


def register_resolvers() -> None:
    """Register every resolver of :data:`RESOLVERS` (idempotent)."""
    for name, resolver in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)


register_resolvers()
