"""art-diffusion: the ConvDiffusionModel of "Implementing Diffusion Models for Creative AI Art Generation",
trained with PyTorch Lightning and configured with Hydra, and a DDPM that generates new art.

One package per concept (``ls`` shows the architecture):

    nets/         the networks, plain nn.Modules: ConvDiffusionModel, ConvDenoiser
    losses/       the objectives: HybridLoss (the article's), DiffusionLoss (the DDPM's)
    vgg/          the one frozen VGG16 feature extractor and its offline weight sources
    diffusion/    schedule, samplers, EMA: diffusion maths without Lightning
    lightning/    the LightningModules: ReconstructionModule, DiffusionModule and their base
    callbacks/    image grids, RNG state, checkpoint on SIGTERM
    data/         the art ImageFolder data module, decoding, bad-file report, pixel cache, demo data
    metrics/      PSNR/SSIM, LPIPS, FD-VGG
    run/          train(cfg) under Hydra: sweep jobs, resume, HPARAMS, DDP run dirs, sweep summary, resolvers
    tools/        reconstruct, evaluate, generate, fd_vgg (behind scripts/)
    checkpoints   the one safe checkpoint loader
    storage       the one cache dir, file lock and atomic write

The public names below are imported on first use, so ``import art_diffusion`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ConvDiffusionModel": "art_diffusion.nets",
    "ConvDenoiser": "art_diffusion.nets",
    "HybridLoss": "art_diffusion.losses",
    "DiffusionLoss": "art_diffusion.losses",
    "VGG16Features": "art_diffusion.vgg",
    "NoiseSchedule": "art_diffusion.diffusion",
    "ReconstructionModule": "art_diffusion.lightning",
    "DiffusionModule": "art_diffusion.lightning",
    "ArtDataModule": "art_diffusion.data",
    "DemoDataModule": "art_diffusion.data",
    "LPIPS": "art_diffusion.metrics",
    "fd_vgg": "art_diffusion.metrics",
    "load_module": "art_diffusion.checkpoints",
    "load_net": "art_diffusion.checkpoints",
    "train": "art_diffusion.run.train",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'art_diffusion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
