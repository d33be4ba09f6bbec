"""The article's ConvDiffusionModel: a three-level convolutional encoder-decoder with additive skips."""

from torch import Tensor, nn

from art_diffusion.nets.fused_blocks import FusedBlock

#: Every encoder level halves the resolution, so input sides must be divisible by 2**3.
DOWNSAMPLING_FACTOR = 8


def _down(in_ch: int, out_ch: int, fused: bool) -> FusedBlock:
    # The article orders it Conv -> ReLU -> BatchNorm -> MaxPool (BatchNorm after the activation); kept as published.
    return FusedBlock(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_ch),
        nn.MaxPool2d(2),
        fused=fused,
    )


def _up(in_ch: int, out_ch: int, fused: bool) -> FusedBlock:
    return FusedBlock(
        nn.ConvTranspose2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, output_padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_ch),
        fused=fused,
    )


class ConvDiffusionModel(nn.Module):
    """Encoder 3 -> c -> 2c -> 4c (each level /2), decoder back up with skips, Sigmoid output in [0, 1].

    ``base_channels=64`` is the article's network (742,659 parameters); smaller values give tiny nets for tests.
    ``fused=True`` runs each block's ReLU, BatchNorm and max-pool in fused passes on CPU (:mod:`fused_blocks`); the
    modules, parameters and state dict are the same either way.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, fused: bool = True) -> None:
        super().__init__()
        c = base_channels
        self.enc1 = _down(in_channels, c, fused)
        self.enc2 = _down(c, 2 * c, fused)
        self.enc3 = _down(2 * c, 4 * c, fused)
        self.dec1 = _up(4 * c, 2 * c, fused)
        self.dec2 = _up(2 * c, c, fused)
        self.dec3 = nn.Sequential(
            nn.ConvTranspose2d(c, in_channels, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_input_size(x)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d1 = self.dec1(e3) + e2
        d2 = self.dec2(d1) + e1
        return self.dec3(d2)


def check_input_size(x: Tensor) -> None:
    h, w = x.shape[-2:]
    if h % DOWNSAMPLING_FACTOR or w % DOWNSAMPLING_FACTOR:
        raise ValueError(f"The network needs height and width divisible by {DOWNSAMPLING_FACTOR}, got {h}x{w}: resize "
                         f"or pad the input to a multiple of {DOWNSAMPLING_FACTOR}.")
