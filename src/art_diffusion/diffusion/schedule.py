"""Noise schedules and the closed-form forward process q(x_t | x_0) of a DDPM (what the denoiser outputs, and how
its loss is weighted, is in :mod:`art_diffusion.diffusion.prediction`).

Timesteps are 0-indexed: t = 0 is the first noising step, t = T - 1 the last (x_{T-1} is ~pure noise).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: Ho et al. (2020) use betas from 1e-4 to 0.02 over 1000 steps; other T rescale them (Nichol & Dhariwal 2021, 3.2)
#: so the chain ends at the same noise level.
LINEAR_BETA_START, LINEAR_BETA_END, LINEAR_REFERENCE_STEPS = 1e-4, 0.02, 1000
#: Nichol & Dhariwal's offset s keeps beta_0 from being vanishingly small; 0.999 caps beta near t = T.
COSINE_OFFSET, MAX_BETA = 0.008, 0.999
SCHEDULES = ("linear", "cosine")


def linear_betas(timesteps: int) -> Tensor:
    scale = LINEAR_REFERENCE_STEPS / timesteps
    return torch.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int) -> Tensor:
    """alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), betas derived from its ratios."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


class NoiseSchedule(nn.Module):
    """beta_t and the quantities derived from it, as non-persistent buffers (rebuilt from the config, not saved).

    Computed in float64, stored in float32: alpha_bar reaches ~4e-5 at t = T - 1 and keeps its precision.
    """

    def __init__(self, kind: str = "linear", timesteps: int = 1000) -> None:
        super().__init__()
        if kind not in SCHEDULES:
            raise ValueError(f"NoiseSchedule: kind must be one of {SCHEDULES}, got {kind!r}.")
        if timesteps < 2:
            raise ValueError(f"NoiseSchedule: timesteps must be >= 2, got {timesteps}.")
        self.kind = kind
        self.timesteps = timesteps
        betas = linear_betas(timesteps) if kind == "linear" else cosine_betas(timesteps)
        alpha_bar = torch.cumprod(1 - betas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        for name, value in {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            # variance of the true posterior q(x_{t-1} | x_t, x_0), Ho et al. eq. 7
            "posterior_variance": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, timesteps={self.timesteps}"

    def sample_timesteps(self, batch_size: int, device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randint(0, self.timesteps, (batch_size,), device=device, generator=generator)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps: one jump from the data to any noise level."""
        a = per_sample(self.alpha_bar[t], x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Invert q_sample given a noise estimate."""
        a = per_sample(self.alpha_bar[t], x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), per timestep."""
        a = self.alpha_bar[t]
        return a / (1 - a)


def to_model_space(images: Tensor) -> Tensor:
    """[0, 1] pixels (what the datamodule gives) -> [-1, 1], where the Gaussian noise is scaled to the data."""
    return images * 2 - 1


def to_pixels(x: Tensor) -> Tensor:
    """[-1, 1] model space -> [0, 1] pixels, clamped."""
    return ((x + 1) / 2).clamp(0, 1)


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) so per-sample coefficients broadcast over images."""
    return values.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)
