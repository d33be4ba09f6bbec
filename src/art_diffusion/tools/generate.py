"""generate(cfg): a DiffusionModule rebuilt from its checkpoint writes new images as PNGs and a grid."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torchvision.utils import make_grid, save_image

from art_diffusion.checkpoints import load_module
from art_diffusion.errors import ConfigError
from art_diffusion.lightning import DiffusionModule
from art_diffusion.run.validate import check_values
from art_diffusion.storage import atomic_path
from art_diffusion.tools.inputs import resolve_device

log = logging.getLogger(__name__)



def generate(cfg: DictConfig) -> list[Path]:
    """Sample ``cfg.num_images`` images in batches; returns the PNG paths (the grid is written beside them)."""
    check_values(cfg, "generate")
    if cfg.num_images < 1 or cfg.batch_size < 1:
        raise ConfigError(f"num_images and batch_size must be >= 1, got {cfg.num_images} and {cfg.batch_size}.")
    device = resolve_device(cfg.device)
    module, _ = load_module(cfg.ckpt_path, device, DiffusionModule, cfg.trusted_classes)
    label = None if cfg.class_name is None else module.class_index(cfg.class_name)
    if label is None and module.num_classes:
        log.info("Conditional model and no class_name: sampling unconditionally (classes: %s).", module.class_names)

    # One generator for the whole run: the same seed (and batch_size) gives the same images on any device.
    generator = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, paths = [], []
    batches = range(0, cfg.num_images, cfg.batch_size)
    if cfg.progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="batches", unit="batch")
    for start in batches:
        n = min(cfg.batch_size, cfg.num_images - start)
        labels = None if label is None else torch.full((n,), label, dtype=torch.long)
        batch = module.sample(n, sampler=cfg.sampler, steps=cfg.steps, eta=cfg.eta, generator=generator,
                              labels=labels, guidance_scale=cfg.guidance_scale, use_ema=cfg.use_ema,
                              progress=cfg.progress).cpu()
        for i, image in enumerate(batch):
            paths.append(out / "images" / f"{start + i:05d}.png")
            with atomic_path(paths[-1]) as tmp:
                save_image(image, tmp, format="png")
        images.append(batch)
    grid = make_grid(torch.cat(images), nrow=math.ceil(math.sqrt(cfg.num_images)), padding=2, pad_value=1.0)
    with atomic_path(out / "grid.png") as tmp:
        save_image(grid, tmp, format="png")
    log.info("Wrote %d images to %s and the grid to %s", len(paths), out / "images", out / "grid.png")
    return paths
