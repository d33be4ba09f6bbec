"""art-diffusion: the ConvDiffusionModel of "Implementing Diffusion Models for Creative AI Art Generation",
trained with PyTorch Lightning and configured with Hydra, and a DDPM that generates new art.

One package per concept (``ls`` shows the architecture):

    nets/         the networks, plain nn.Modules: ConvDiffusionModel, ConvDenoiser, UNet, DiffusersUNet;
                  the ConvDiffusionModel's fused ReLU/BatchNorm/max-pool blocks and their C kernels;
                  nets/vgg/ the one frozen VGG16 feature extractor and its offline weight sources
    losses/       the objectives: HybridLoss (the article's), DiffusionLoss (the DDPM's), the perceptual term
    diffusion/    DDPM maths without Lightning: schedule, prediction types and weighting, samplers, EMA
    data/         the art ImageFolder data module, file listing, decoding, bad-file report, pixel cache, demo data
    lightning/    what Lightning runs: the LightningModules, the image-grid and score callbacks, the loggers
    checkpoints/  loading without trusting, the class registry, atomic saves, resume, the resumability callbacks
    metrics/      PSNR/SSIM, LPIPS, FD-VGG and KID
    run/          train(cfg) under Hydra: config checks, precision, sweep jobs and summaries, clusters, the CLI
    tools/        reconstruct, evaluate, generate, fd_vgg: what scripts/ other than train.py run
    pretrained/   load_pretrained (a run dir, a .ckpt or an exported folder in one line), export.py's
                  safetensors + config.json + model card folder, read without torch.load, and ONNX
    storage/      the one cache dir, file lock, lock owner record and atomic write

This file also holds the errors a user can act on (:class:`UserError` and its kinds): their message is complete on
its own (the key or path, what is wrong, the fix); the scripts print it alone and exit with status 2 (see
``art_diffusion.run.cli.user_errors``). Anything else is a bug and keeps its traceback.

The public names below are imported on first use, so ``import art_diffusion`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"


class UserError(Exception):
    """An error the user can fix; the scripts show its message without a traceback."""


class ConfigError(UserError, ValueError):
    """A config value out of its allowed range: the message names the key, the value, the range and the fix."""


class DataError(UserError, ValueError):
    """A data folder that cannot be trained on as given (wrong path, nothing usable, class sets that disagree)."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named (a checkpoint, an input, a data folder) does not exist."""


class DivergedError(UserError, ArithmeticError):
    """Training produced a non-finite loss or weights: the run stopped, nothing non-finite was saved."""


_EXPORTS = {
    "ConvDiffusionModel": "art_diffusion.nets",
    "ConvDenoiser": "art_diffusion.nets",
    "UNet": "art_diffusion.nets",
    "VGG16Features": "art_diffusion.nets.vgg",
    "HybridLoss": "art_diffusion.losses",
    "DiffusionLoss": "art_diffusion.losses",
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
    "load_pretrained": "art_diffusion.pretrained",
}

__all__ = ["ConfigError", "DataError", "DivergedError", "MissingPathError", "UserError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'art_diffusion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
