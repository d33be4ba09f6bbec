"""Rebuild a DiffusionModule from a training checkpoint and write new images as PNGs and a grid."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torchvision.utils import make_grid, save_image

from art_diffusion.checkpoints import check_trusted_targets, load_checkpoint, stored_config
from art_diffusion.diffusion.module import DiffusionModule
from art_diffusion.inference import resolve_device

log = logging.getLogger(__name__)



def load_diffusion_module(ckpt_path: str | Path, device: torch.device | str = "cpu") -> DiffusionModule:
    """The checkpoint's module, built from the run config it stores, with its trained (and EMA) weights."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={str(path)!r} is not a file. Pass a checkpoint of a model=ddpm run, e.g. "
            "ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt"
        )
    checkpoint = load_checkpoint(path)  # weights_only=True, with errors naming the file
    config = stored_config(checkpoint, path)
    # Sampling needs no optimizer; everything else the file asks to build must be ours (never os.system & co.).
    module_config = {k: v for k, v in config["module"].items() if k not in ("optimizer", "scheduler")}
    check_trusted_targets(module_config, str(path), where="module")
    target = module_config["_target_"]
    if not issubclass(get_class(target), DiffusionModule):
        raise ValueError(f"{path} holds a {target}, which reconstructs images rather than generating them. "
                         "Train a generative model with `python scripts/train.py model=ddpm ...` and pass its checkpoint.")
    module: DiffusionModule = instantiate(module_config, optimizer=None)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module.to(device).eval()


def generate(cfg: DictConfig) -> list[Path]:
    """Sample ``cfg.num_images`` images in batches; returns the PNG paths (the grid is written beside them)."""
    if cfg.num_images < 1 or cfg.batch_size < 1:
        raise ValueError(f"num_images and batch_size must be >= 1, got {cfg.num_images} and {cfg.batch_size}.")
    device = resolve_device(cfg.device)
    module = load_diffusion_module(cfg.ckpt_path, device)
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
            save_image(image, paths[-1])
        images.append(batch)
    grid = make_grid(torch.cat(images), nrow=math.ceil(math.sqrt(cfg.num_images)), padding=2, pad_value=1.0)
    save_image(grid, out / "grid.png")
    log.info("Wrote %d images to %s and the grid to %s", len(paths), out / "images", out / "grid.png")
    return paths
