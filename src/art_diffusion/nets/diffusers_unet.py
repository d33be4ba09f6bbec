"""diffusers' ``UNet2DModel`` (the field's standard DDPM UNet) behind the project's denoiser call signature, so
``model/net=diffusers_unet`` swaps it in for :class:`art_diffusion.nets.UNet` with the same sizes.

Its weights are built here, never downloaded. ``benchmarks/ddpm_objectives.py`` compares the two at equal sizes
(BENCHMARKS.md, "Objectives and the net"); ours stays the default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from art_diffusion import UserError
from art_diffusion.nets.unet import HEAD_CHANNELS


class DiffusersUNet(nn.Module):
    """``UNet2DModel`` with ResNet blocks at every level, self-attention at the levels whose side is in
    ``attention_resolutions`` and in the middle block; ``num_classes`` adds a class embedding with one extra
    label, ``num_classes``, meaning "no class" (classifier-free guidance), as in the project's nets."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, channel_mults=(1, 2, 2),
                 num_res_blocks: int = 2, attention_resolutions=(16,), image_size: int = 32, dropout: float = 0.0,
                 num_classes: int | None = None) -> None:
        super().__init__()
        try:
            from diffusers import UNet2DModel
        except ImportError:
            raise UserError("DiffusersUNet needs the optional diffusers package: "
                            "pip install -e \".[diffusers]\"") from None
        mults, attn_at = list(channel_mults), {int(r) for r in attention_resolutions}
        if not mults or image_size % 2 ** (len(mults) - 1):
            raise ValueError(f"DiffusersUNet: image_size={image_size} must be divisible by 2**(levels - 1) with "
                             f"channel_mults={mults}.")
        sides = [image_size // 2**level for level in range(len(mults))]
        widths = [base_channels * m for m in mults]
        # heads of HEAD_CHANNELS channels; one head where a layer with attention (or the middle) is narrower
        narrowest = min([w for w, s in zip(widths, sides) if s in attn_at] + [widths[-1]])
        self.num_classes, self.image_size = num_classes, image_size
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
            block_out_channels=widths, layers_per_block=num_res_blocks,
            down_block_types=["AttnDownBlock2D" if s in attn_at else "DownBlock2D" for s in sides],
            up_block_types=["AttnUpBlock2D" if s in attn_at else "UpBlock2D" for s in reversed(sides)],
            attention_head_dim=min(HEAD_CHANNELS, narrowest), norm_num_groups=min(32, base_channels), dropout=dropout,
            num_class_embeds=num_classes + 1 if num_classes else None,
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if self.num_classes and y is None:
            y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
        return self.unet(x, t, class_labels=y if self.num_classes else None).sample
