"""A denoising diffusion model beside the ConvDiffusionModel: it generates new art from noise."""

from art_diffusion.diffusion.denoiser import ConvDenoiser
from art_diffusion.diffusion.module import DiffusionModule
from art_diffusion.diffusion.schedule import NoiseSchedule

__all__ = ["ConvDenoiser", "DiffusionModule", "NoiseSchedule"]

