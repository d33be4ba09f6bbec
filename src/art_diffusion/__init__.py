"""art-diffusion: the ConvDiffusionModel of "Implementing Diffusion Models for Creative AI Art Generation",
trained with PyTorch Lightning and configured with Hydra."""

__version__ = "0.1.0"
