"""SampleLogger: a grid of images generated from the same noise every N epochs (one per class for a conditional
model), to watch a diffusion model learn."""

from __future__ import annotations

import math

import torch

from art_diffusion.callbacks.image_grid import ImageGridLogger


class SampleLogger(ImageGridLogger):
    """Samples ``num_images`` with ``sampler`` (ddim | dpm++2m | ddpm) in ``steps`` from a fixed ``seed``.

    The fixed seed gives every epoch the same starting noise, so grids compare across epochs. The module must
    expose ``sample(num_images, sampler, steps, eta, generator, labels, guidance_scale)`` like DiffusionModule. A
    conditional model gets one grid per class (``tag/<class>``, ``epoch_XXX_<class>.png``), all from that same
    noise, so the grids also show what the class changes.
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 16, steps: int = 25,
                 eta: float = 0.0, seed: int = 0, guidance_scale: float = 1.0, tag: str = "visuals/samples",
                 logged_size: int = 256, sampler: str = "ddim") -> None:
        super().__init__(dirpath, every_n_epochs, tag, logged_size)
        self.num_images = num_images
        self.sampler = sampler
        self.steps = steps
        self.eta = eta
        self.seed = seed
        self.guidance_scale = guidance_scale

    def _sample(self, pl_module, labels: torch.Tensor | None) -> torch.Tensor:
        return pl_module.sample(
            self.num_images, sampler=self.sampler, steps=self.steps, eta=self.eta,
            generator=torch.Generator().manual_seed(self.seed), labels=labels, guidance_scale=self.guidance_scale,
        )

    def make_grids(self, trainer, pl_module) -> dict[str, tuple[torch.Tensor, int]]:
        nrow = math.ceil(math.sqrt(self.num_images))
        num_classes = getattr(pl_module, "num_classes", None)
        if not num_classes:
            return {"": (self._sample(pl_module, None), nrow)}
        names = getattr(pl_module, "class_names", None) or [str(i) for i in range(num_classes)]
        return {name: (self._sample(pl_module, torch.full((self.num_images,), label, dtype=torch.long)), nrow)
                for label, name in enumerate(names)}
