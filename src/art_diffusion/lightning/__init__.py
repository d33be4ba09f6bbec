"""The LightningModules: what training does with a network. ``conf/model/*.yaml`` instantiates one of them.

- :class:`NetworkModule`: the shared base (network, loss, optimizer partials, run config in checkpoints).
- :class:`ReconstructionModule`: the article's task, reconstruct the input with the hybrid loss.
- :class:`DiffusionModule`: a DDPM that generates new images from noise.
"""

from art_diffusion.lightning.base_module import NetworkModule
from art_diffusion.lightning.diffusion_module import DiffusionModule
from art_diffusion.lightning.reconstruction_module import ReconstructionModule

__all__ = ["DiffusionModule", "NetworkModule", "ReconstructionModule"]
