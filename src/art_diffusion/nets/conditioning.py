"""What the denoisers share: the timestep (and class) embedding every block receives, and their normalisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Upper bound of GroupNorm groups; narrower layers use fewer (every group needs a whole number of channels).
MAX_NORM_GROUPS = 8


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer-style sinusoidal features of the (integer) timestep, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.cos(), angles.sin()], dim=1)
    return F.pad(emb, (0, dim % 2))


def condition_embedding(time_mlp: nn.Module, class_emb: nn.Embedding | None, num_classes: int | None, t: Tensor,
                        y: Tensor | None, dim: int) -> Tensor:
    """What every block of a denoiser receives: ``time_mlp`` of t's ``dim``-wide sinusoid, plus ``class_emb(y)`` for a
    conditional net, where ``y=None`` asks for the "no class" label ``num_classes`` (classifier-free guidance)."""
    emb = time_mlp(timestep_embedding(t, dim))
    if class_emb is not None:
        if y is None:
            y = torch.full_like(t, num_classes)
        emb = emb + class_emb(y)
    return emb


def group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not the ConvDiffusionModel's BatchNorm: a training batch mixes every noise level, so batch
    # statistics (and the running averages used at sampling time) would describe no noise level in particular.
    return nn.GroupNorm(math.gcd(channels, MAX_NORM_GROUPS), channels)
