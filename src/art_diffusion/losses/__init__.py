"""Training objectives, each one object that owns its whole loss: the article's hybrid loss and the DDPM's."""

from art_diffusion.losses.diffusion import DiffusionLoss
from art_diffusion.losses.hybrid import HybridLoss
from art_diffusion.losses.perceptual import PerceptualLoss, WeightedLoss

__all__ = ["DiffusionLoss", "HybridLoss", "PerceptualLoss", "WeightedLoss"]
