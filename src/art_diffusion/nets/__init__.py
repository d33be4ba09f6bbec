"""The networks: plain ``nn.Module``s that know nothing of training.

- :class:`ConvDiffusionModel`: the article's encoder-decoder that reconstructs its input.
- :class:`ConvDenoiser`: the same shape turned into a noise predictor for the DDPM (the article-shaped baseline).
- :class:`UNet`: the DDPM's default denoiser: residual blocks, self-attention at low resolution.
"""

from art_diffusion.nets.conv_denoiser import ConvDenoiser
from art_diffusion.nets.conv_diffusion import DOWNSAMPLING_FACTOR, ConvDiffusionModel, check_input_size
from art_diffusion.nets.unet import UNet

__all__ = ["DOWNSAMPLING_FACTOR", "ConvDenoiser", "ConvDiffusionModel", "UNet", "check_input_size"]
