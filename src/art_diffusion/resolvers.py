"""OmegaConf resolvers the configs use; registered when art_diffusion.train is imported."""

import hashlib

from omegaconf import OmegaConf

MAX_DIRNAME = 120  # well under the 255 bytes most filesystems allow for one path component


def safe_dirname(name: str) -> str:
    """A sweep job's directory name: its overrides, flattened, and shortened with a hash when too long."""
    name = name.replace("/", "_") or "default"
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_DIRNAME - 11]}-{digest}"


def register() -> None:
    OmegaConf.register_new_resolver("safe_dirname", safe_dirname, replace=True)


register()
