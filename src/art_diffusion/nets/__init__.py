"""The networks: plain ``nn.Module``s that know nothing of training or of the config layout.

- :class:`ConvDiffusionModel`: the article's encoder-decoder that reconstructs its input.
- :class:`ConvDenoiser`: the same shape turned into a noise predictor for the DDPM (the article-shaped baseline).
- :class:`UNet`: the DDPM's default denoiser: residual blocks, self-attention at low resolution.
- :class:`DiffusersUNet`: diffusers' ``UNet2DModel`` with the same sizes and call signature (optional dependency).
- :mod:`~art_diffusion.nets.conditioning`: the timestep/class embedding and normalisation the denoisers share.
- :mod:`~art_diffusion.nets.vgg`: the frozen ImageNet VGG16 feature extractor (perceptual loss, LPIPS, FD-VGG) and
  its offline weight sources.
"""

from art_diffusion.nets.conv_denoiser import ConvDenoiser
from art_diffusion.nets.conv_diffusion import DOWNSAMPLING_FACTOR, ConvDiffusionModel, check_input_size
from art_diffusion.nets.diffusers_unet import DiffusersUNet
from art_diffusion.nets.unet import UNet

__all__ = ["DOWNSAMPLING_FACTOR", "ConvDenoiser", "ConvDiffusionModel", "DiffusersUNet", "UNet", "check_input_size"]
