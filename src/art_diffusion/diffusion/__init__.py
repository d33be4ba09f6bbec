"""Diffusion maths, no Lightning: the noise schedule and forward process (schedule), what the denoiser predicts and
how its loss is weighted (prediction), the samplers behind one entry point (samplers.sample), the weight EMA."""

from art_diffusion.diffusion.ema import EMA
from art_diffusion.diffusion.prediction import PREDICTIONS, eps_predictor, min_snr_weights, target, x0_and_eps
from art_diffusion.diffusion.samplers import (
    SAMPLERS,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    dpm_solver_2m_sample,
    guided,
    sample,
)
from art_diffusion.diffusion.schedule import NoiseSchedule, to_model_space, to_pixels

__all__ = ["EMA", "PREDICTIONS", "SAMPLERS", "NoiseSchedule", "ddim_sample", "ddim_timesteps", "ddpm_sample",
           "dpm_solver_2m_sample", "eps_predictor", "guided", "min_snr_weights", "sample", "target", "to_model_space",
           "to_pixels", "x0_and_eps"]
