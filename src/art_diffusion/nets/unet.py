"""A compact DDPM UNet (Ho et al. 2020; Dhariwal & Nichol 2021): residual blocks with GroupNorm + SiLU, the
timestep (and class) embedding added in every residual block, self-attention at low resolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from art_diffusion.nets.conditioning import condition_embedding, group_norm

#: Channels per attention head; narrower layers use one head.
HEAD_CHANNELS = 32


def _conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def _zero(module: nn.Module) -> nn.Module:
    """A residual branch that starts as the identity: its last layer outputs 0."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """norm -> SiLU -> conv, then the embedding's per-channel scale/shift, norm -> SiLU -> dropout -> conv, + skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_ch), nn.SiLU(), _conv(in_ch, out_ch))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm = group_norm(out_ch)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), _zero(_conv(out_ch, out_ch)))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers(self.norm(h) * (1 + scale) + shift)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a (low-resolution) feature map, as a residual branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = channels // HEAD_CHANNELS if channels % HEAD_CHANNELS == 0 else 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj = _zero(nn.Conv2d(channels, channels, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2)
        out = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # (b, heads, hw, c / heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Layer(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = SelfAttention(out_ch) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv(channels, channels)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """eps/v/x0_theta(x_t, t[, y]) with the call signature of :class:`ConvDenoiser`.

    Level ``i`` works at ``image_size / 2**i`` px with ``base_channels * channel_mults[i]`` channels and
    ``num_res_blocks`` residual blocks (one more on the way up, fed the matching skip); a layer whose resolution is
    in ``attention_resolutions`` adds self-attention. ``num_classes`` adds a class embedding; label ``num_classes``
    means "no class" (classifier-free guidance).
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, channel_mults=(1, 2, 2),
                 num_res_blocks: int = 2, attention_resolutions=(16,), image_size: int = 32, dropout: float = 0.0,
                 num_classes: int | None = None) -> None:
        super().__init__()
        mults, attn_at = list(channel_mults), {int(r) for r in attention_resolutions}
        if not mults or image_size % 2 ** (len(mults) - 1):
            raise ValueError(f"UNet: image_size={image_size} must be divisible by 2**(levels - 1) with "
                             f"channel_mults={mults}.")
        c, emb_dim = base_channels, 4 * base_channels
        self.base_channels, self.num_classes, self.image_size = c, num_classes, image_size
        self.time_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.stem = _conv(in_channels, c)
        self.down, skips, ch, res = nn.ModuleList(), [c], c, image_size
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                self.down.append(Layer(ch, c * mult, emb_dim, dropout, res in attn_at))
                ch = c * mult
                skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([Layer(ch, ch, emb_dim, dropout, True), Layer(ch, ch, emb_dim, dropout, False)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(Layer(ch + skips.pop(), c * mult, emb_dim, dropout, res in attn_at))
                ch = c * mult
            if level > 0:
                self.up.append(Upsample(ch))
                res *= 2
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), _zero(_conv(ch, in_channels)))

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        return condition_embedding(self.time_mlp, self.class_emb, self.num_classes, t, y, self.base_channels)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.embed(t, y)
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            h = layer(h, emb) if isinstance(layer, Upsample) else layer(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
