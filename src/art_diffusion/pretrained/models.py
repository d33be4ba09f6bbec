"""``load_pretrained(path)``: a trained model in one line, from a run dir, a ``.ckpt`` or an exported folder.

The objects it returns run the scripts' own code: :class:`PretrainedReconstructor` goes through
:class:`art_diffusion.tools.reconstruct.Reconstructor` (the decoding, padding and batching of reconstruct.py) and
:class:`PretrainedGenerator` through :meth:`DiffusionModule.sample_batches` with generate.py's defaults, so the
same image (or seed) gives the same pixels as the scripts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from art_diffusion import DataError, MissingPathError, UserError
from art_diffusion.checkpoints import load_module
from art_diffusion.run.run_dir import BEST_CHECKPOINT
from art_diffusion.run.validate import check_call, check_class_name, check_steps
from art_diffusion.tools.inputs import resolve_device

ImageInput = Image.Image | str | Path
PIXEL_SLACK = 1e-3  # a batch computed in float (resized, blended) may pass 0 or 1 by rounding


class PretrainedReconstructor:
    """The art reconstructor (a ConvDiffusionModel): ``reconstruct(images)``, the same pixels as reconstruct.py."""

    task = "reconstruct"

    def __init__(self, net: nn.Module, image_size: int, class_names: list[str] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.image_size = image_size  # the training size: size="train" resizes every image to it
        self.class_names = class_names
        self.config = config  # the run config (from a checkpoint) or config.json (from an exported folder)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> PretrainedReconstructor:
        self.net.to(resolve_device(str(device)))
        return self

    def reconstruct(self, images: ImageInput | Sequence[ImageInput] | Tensor, size: str = "native",
                    batch_size: int = 16, pad_mode: str = "reflect") -> Image.Image | list[Image.Image] | Tensor:
        """Reconstructions of PIL images or image files (one, or a list: PIL images back, in order), or of an
        NCHW float batch in [0, 1] (a tensor back, on the CPU).

        ``size="native"`` (default): each image at its own size (padded to a multiple of 8, cropped back), the same
        pixels as ``reconstruct.py size=native``; ``size="train"``: resized to the training size first, as
        ``reconstruct.py``'s default does (and returned at that size). A tensor is reconstructed at its own size.
        """
        from art_diffusion.tools.reconstruct import Reconstruction, Reconstructor, to_pil

        check_call("reconstruct", {"batch_size": batch_size, "size": size, "pad_mode": pad_mode})
        reconstructor = Reconstructor(self.net, self.image_size, size, pad_mode, self.device)
        if isinstance(images, Tensor):
            if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
                raise ValueError(f"A tensor input must be an NCHW float batch of RGB images in [0, 1], got shape "
                                 f"{tuple(images.shape)} ({images.dtype}).")
            check_pixels(images)
            if size != "native":
                raise ValueError("A tensor batch is reconstructed at its own size: resize it first, or pass PIL "
                                 "images with size='train'.")
            return torch.cat([reconstructor(images[i:i + batch_size]).cpu()
                              for i in range(0, len(images), batch_size)])
        single = isinstance(images, (Image.Image, str, Path))
        items = [Reconstruction(None, image=self._load(reconstructor, image)) for image in
                 ([images] if single else list(images))]
        for start in range(0, len(items), batch_size):
            reconstructor.fill(items[start:start + batch_size])
        outputs = [to_pil(item.reconstruction) for item in items]
        return outputs[0] if single else outputs

    @staticmethod
    def _load(reconstructor, image: ImageInput) -> Tensor:
        from art_diffusion.data.images import BadImage

        if not isinstance(image, (Image.Image, str, Path)):
            raise TypeError(f"Expected PIL images or image paths, got a {type(image).__name__}.")
        if isinstance(image, (str, Path)) and not Path(image).is_file():
            raise MissingPathError(f"{image}: no such image file.")
        try:
            return reconstructor.load(image if isinstance(image, Image.Image) else Path(image))
        except BadImage as exc:
            raise DataError(f"{image}: {exc}") from None


class PretrainedGenerator:
    """A DDPM: ``generate(num_images)``, the same images as generate.py for the same seed and settings."""

    task = "generate"

    def __init__(self, module: nn.Module, config: dict[str, Any] | None = None) -> None:
        self.module = module.eval()  # a DiffusionModule: its EMA weights sample (generate.py's use_ema=true)
        self.config = config

    @property
    def class_names(self) -> list[str] | None:
        return self.module.class_names

    @property
    def image_size(self) -> int:
        return self.module.image_size

    @property
    def device(self) -> torch.device:
        return self.module.device

    def to(self, device: str | torch.device) -> PretrainedGenerator:
        self.module.to(resolve_device(str(device)))
        return self

    # the defaults of conf/generate.yaml (tests/test_pretrained.py checks that they agree)
    def generate(self, num_images: int, class_name: str | None = None, steps: int = 20, seed: int = 0,
                 sampler: str = "dpm++2m", guidance_scale: float = 3.0, eta: float = 0.0, batch_size: int = 16,
                 progress: bool = False) -> list[Image.Image]:
        """``num_images`` new images (of ``class_name`` for a conditional model) as PIL images; one generator
        seeded with ``seed`` for the whole call, so the same arguments give the same images on any device."""
        from art_diffusion.tools.generate import to_pil

        check_call("generate", {"num_images": num_images, "batch_size": batch_size, "steps": steps, "seed": seed,
                                "sampler": sampler, "guidance_scale": guidance_scale, "eta": eta,
                                "progress": progress})
        check_steps("steps", steps, sampler, self.module.schedule.timesteps)
        labels = None
        if class_name is not None:
            if class_name == "all":
                raise ValueError("class_name='all' is generate.py's; here ask for one class at a time.")
            check_class_name("class_name", class_name, self.module.class_names, self.module.num_classes)
            labels = torch.full((num_images,), self.module.class_index(class_name), dtype=torch.long)
        generator = torch.Generator().manual_seed(seed)
        batches = self.module.sample_batches(num_images, sampler=sampler, steps=steps, eta=eta, generator=generator,
                                             labels=labels, guidance_scale=guidance_scale, use_ema=True,
                                             progress=progress, batch_size=batch_size)
        return [to_pil(image) for batch in batches for image in batch.cpu()]


Pretrained = PretrainedReconstructor | PretrainedGenerator


def check_pixels(images: Tensor) -> None:
    """A batch holding NaN or inf, or pixels outside [0, 1] (0-255 values, a normalised batch): refused, since the
    network would turn it into images that look like a result."""
    if images.numel() == 0:
        return
    low, high = (value.item() for value in torch.aminmax(images))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("A tensor input holds NaN or inf: pass RGB images in [0, 1].")
    if low < -PIXEL_SLACK or high > 1 + PIXEL_SLACK:
        hint = " (0-255 values? divide by 255)" if high > 2 else " (a normalised batch? undo the normalisation)"
        raise ValueError(f"A tensor input must hold pixels in [0, 1], got values from {low:.4g} to {high:.4g}{hint}.")


def _from_folder(folder: Path, trusted_classes: Iterable[str]) -> Pretrained:
    from art_diffusion.pretrained.folder import load_folder

    config, net = load_folder(folder, trusted_classes)
    if config["task"] == "reconstruct":
        return PretrainedReconstructor(net, config["image_size"], config["class_names"], config)
    from hydra.utils import instantiate

    from art_diffusion.lightning import DiffusionModule
    from art_diffusion.losses import DiffusionLoss

    diffusion = config["diffusion"]
    # the net holds the EMA weights, so the module's EMA (a copy of the net made here) samples with them
    module = DiffusionModule(net, DiffusionLoss(), optimizer=None, schedule=instantiate(diffusion["schedule"]),
                             image_size=config["image_size"], num_classes=diffusion["num_classes"],
                             prediction=diffusion["prediction"])
    module.class_names = config["class_names"]
    return PretrainedGenerator(module.eval(), config)


def _from_checkpoint(path: Path, trusted_classes: Iterable[str]) -> Pretrained:
    from art_diffusion.lightning import DiffusionModule, ReconstructionModule

    module, run_config = load_module(path, "cpu", None, trusted_classes)
    if isinstance(module, ReconstructionModule):
        return PretrainedReconstructor(module.net, run_config["data"]["image_size"], None, run_config)
    if isinstance(module, DiffusionModule):
        return PretrainedGenerator(module, run_config)
    raise UserError(f"{path} holds a {type(module).__name__}, which load_pretrained does not know.")


def load_pretrained(path: str | Path, device: str | torch.device = "cpu",
                    trusted_classes: Iterable[str] = ()) -> Pretrained:
    """A trained model from ``path``: an exported folder (config.json + model.safetensors, see
    ``scripts/export.py``), a run dir (its ``checkpoints/best.ckpt``) or a ``.ckpt`` written by training.

    Returns a :class:`PretrainedReconstructor` (``.reconstruct(images)``) or a :class:`PretrainedGenerator`
    (``.generate(num_images)``), on ``device`` (``auto`` = the GPU if there is one). Nothing read runs code: a
    checkpoint opens with ``torch.load(weights_only=True)`` and its config passes the class registry; a folder is
    read as JSON and safetensors only, and its config.json is checked key by key (``trusted_classes``: extra classes
    you vouch for, as on the scripts' command line).
    """
    from art_diffusion.pretrained.folder import CONFIG_FILE, WEIGHTS_FILE, is_folder

    path = Path(path).expanduser()
    if is_folder(path):
        model = _from_folder(path, trusted_classes)
    elif path.is_dir() and (path / BEST_CHECKPOINT).is_file():
        model = _from_checkpoint(path / BEST_CHECKPOINT, trusted_classes)
    elif path.is_dir():
        raise MissingPathError(f"{path} is neither an exported folder ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a run dir "
                               f"({BEST_CHECKPOINT}). Pass one of those, or a .ckpt file.")
    elif path.is_file():
        model = _from_checkpoint(path, trusted_classes)
    else:
        raise MissingPathError(f"{path}: no such file or directory. Pass an exported folder, a run dir or a .ckpt.")
    return model.to(device)
