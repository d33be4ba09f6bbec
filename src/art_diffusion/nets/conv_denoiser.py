"""The ConvDiffusionModel turned into a noise predictor: same 3-level encoder-decoder with additive skips,
told the timestep (and optionally the class) in every block, with a linear output that predicts eps."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from art_diffusion.nets.conditioning import condition_embedding, group_norm
from art_diffusion.nets.conv_diffusion import check_input_size


class Block(nn.Module):
    """conv -> GroupNorm -> per-channel scale/shift from the embedding -> SiLU.

    ``conv`` is a 3x3 conv (encoder) or a stride-2 transposed conv (decoder), as in the ConvDiffusionModel.
    """

    def __init__(self, conv: nn.Module, out_ch: int, emb_dim: int) -> None:
        super().__init__()
        self.conv = conv
        self.norm = group_norm(out_ch)
        self.film = nn.Linear(emb_dim, 2 * out_ch)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        return F.silu(self.norm(self.conv(x)) * (1 + scale) + shift)


def _conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def _up(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, output_padding=1)


class ConvDenoiser(nn.Module):
    """eps_theta(x_t, t[, y]): encoder 3 -> c -> 2c -> 4c (each level /2), decoder back up with additive skips.

    Differences from the ConvDiffusionModel, each needed to predict noise: the first level's activation is also
    added back at full resolution before the head (eps is per-pixel; the ConvDiffusionModel only keeps it after
    max-pooling), the timestep embedding in every block, GroupNorm, and a linear 1x1 head (eps is unbounded: no
    Sigmoid). ``num_classes`` adds a class embedding; label ``num_classes`` means "no class" (classifier-free
    guidance).
    """

    def __init__(
        self, in_channels: int = 3, base_channels: int = 64, emb_dim: int = 128, num_classes: int | None = None
    ) -> None:
        super().__init__()
        c = base_channels
        self.emb_dim = emb_dim
        self.num_classes = num_classes
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.enc1 = Block(_conv(in_channels, c), c, emb_dim)
        self.enc2 = Block(_conv(c, 2 * c), 2 * c, emb_dim)
        self.enc3 = Block(_conv(2 * c, 4 * c), 4 * c, emb_dim)
        self.dec1 = Block(_up(4 * c, 2 * c), 2 * c, emb_dim)
        self.dec2 = Block(_up(2 * c, c), c, emb_dim)
        self.dec3 = Block(_up(c, c), c, emb_dim)
        self.head = nn.Conv2d(c, in_channels, kernel_size=1)
        # The untrained net predicts eps = 0, a well-scaled start (the first update un-zeroes the head).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        return condition_embedding(self.time_mlp, self.class_emb, self.num_classes, t, y, self.emb_dim)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        check_input_size(x)
        emb = self.embed(t, y)
        full = self.enc1(x, emb)
        e1 = F.max_pool2d(full, 2)
        e2 = F.max_pool2d(self.enc2(e1, emb), 2)
        e3 = F.max_pool2d(self.enc3(e2, emb), 2)
        d1 = self.dec1(e3, emb) + e2
        d2 = self.dec2(d1, emb) + e1
        d3 = self.dec3(d2, emb) + full
        return self.head(d3)
