"""VGG16's ``features`` layout (torchvision's cfg "D", no batch norm) and state-dict checks against it.

The layout comes from torchvision's own config (``torchvision.models.vgg.cfgs["D"]``): each number is a 3x3 conv
followed by a ReLU, each ``"M"`` a 2x2 max-pool, which gives VGG16's 31 ``features`` layers.
"""

from __future__ import annotations

import torch
from torchvision.models.vgg import cfgs

VGG16_NUM_LAYERS = 31  # len(torchvision.models.vgg16().features)


def layer_kinds() -> list[tuple[str, int]]:
    """(kind, out_channels) per torchvision ``features`` index: conv is always followed by relu."""
    kinds: list[tuple[str, int]] = []
    for v in cfgs["D"]:
        if v == "M":
            kinds.append(("pool", 0))
        else:
            kinds += [("conv", int(v)), ("relu", int(v))]
    return kinds


def expected_shapes(num_layers: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``vgg16().features[:num_layers].state_dict()``."""
    shapes: dict[str, tuple[int, ...]] = {}
    in_ch = 3
    for idx, (kind, out_ch) in enumerate(layer_kinds()[:num_layers]):
        if kind == "conv":
            shapes[f"{idx}.weight"] = (out_ch, in_ch, 3, 3)
            shapes[f"{idx}.bias"] = (out_ch,)
            in_ch = out_ch
    return shapes


def check_num_layers(num_layers: int) -> None:
    if not isinstance(num_layers, int) or not 1 <= num_layers <= VGG16_NUM_LAYERS:
        raise ValueError(
            f"num_layers must be an int in 1..{VGG16_NUM_LAYERS} (VGG16 has {VGG16_NUM_LAYERS} feature layers), "
            f"got {num_layers!r}."
        )


def features_state(state: dict, num_layers: int, origin: str) -> dict[str, torch.Tensor]:
    """Pick ``features[:num_layers]`` conv tensors from a full-model or features-only state dict.

    Copies every tensor so a slice never drags the whole checkpoint's storage into the cache file.
    """
    if not isinstance(state, dict):
        raise ValueError(f"{origin}: expected a state dict (a dict of tensors), got {type(state).__name__}.")
    expected = expected_shapes(num_layers)
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
    # the check every loader of weights makes (NaN, inf): a damaged cache is rebuilt, a damaged source skipped, a
    # damaged file given by path refused naming the tensor
    from art_diffusion.checkpoints.loading import check_tensors

    check_tensors(out, origin, "the file is damaged; use an intact copy of torchvision's vgg16 weights")
    return out
