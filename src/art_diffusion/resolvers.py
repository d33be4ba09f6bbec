"""OmegaConf resolvers the configs use; registered when art_diffusion.train is imported."""

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
    from art_diffusion.resume import run_dir  # lazy: keeps config composition free of torch imports

    return run_dir(resume, default)


def resume_hydra_subdir(resume, stamp: str) -> str:
    from art_diffusion.resume import hydra_subdir

    return hydra_subdir(resume, stamp)


def register() -> None:
    OmegaConf.register_new_resolver("safe_dirname", safe_dirname, replace=True)
    OmegaConf.register_new_resolver("sqlite_url", sqlite_url, replace=True)
    OmegaConf.register_new_resolver("resume_run_dir", resume_run_dir, replace=True)
    OmegaConf.register_new_resolver("resume_hydra_subdir", resume_hydra_subdir, replace=True)


register()
