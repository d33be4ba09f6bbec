"""Diffusion maths, no Lightning: the noise schedule and forward process, the samplers, the weight EMA."""

from art_diffusion.diffusion.ema import EMA
from art_diffusion.diffusion.samplers import (
    SAMPLERS,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    dpm_solver_2m_sample,
    guided,
)
from art_diffusion.diffusion.schedule import PREDICTIONS, NoiseSchedule, to_model_space, to_pixels

__all__ = ["EMA", "PREDICTIONS", "SAMPLERS", "NoiseSchedule", "ddim_sample", "ddim_timesteps", "ddpm_sample",
           "dpm_solver_2m_sample", "guided", "to_model_space", "to_pixels"]
