"""An exponential moving average of a network's weights: what a diffusion model should sample with."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Holds ``average``, a frozen copy of the tracked net; its tensors are ordinary state (saved in checkpoints).

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so short runs are not
    dominated by the random initialisation (with decay 0.999 that would take thousands of steps to fade).
    """

    def __init__(self, net: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.average = copy.deepcopy(net).requires_grad_(False).eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> EMA:
        # the average is only ever evaluated: keep it in eval mode whatever the parent does
        super().train(mode)
        self.average.eval()
        return self

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        n = int(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for avg, new in zip(self.average.parameters(), net.parameters()):
            avg.lerp_(new.detach(), 1.0 - decay)
        for avg, new in zip(self.average.buffers(), net.buffers()):
            avg.copy_(new)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        return self.average(*args, **kwargs)
