"""generate(cfg): a DiffusionModule rebuilt from its checkpoint writes new images as PNGs and a grid."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image
from torchvision.utils import make_grid, save_image

from art_diffusion.checkpoints import load_module
from art_diffusion.lightning import DiffusionModule
from art_diffusion.run.validate import check_class_name, check_steps, check_values
from art_diffusion.storage import atomic_path, inside, output_folder
from art_diffusion.tools.inputs import resolve_device

log = logging.getLogger(__name__)

#: class_name value that samples every class of a conditional model, one grid per class.
ALL_CLASSES = "all"


def generate(cfg: DictConfig) -> list[Path]:
    """Sample ``cfg.num_images`` images (of each class with class_name=all) in batches; returns the PNG paths.

    The grid is written beside them: ``grid.png``, or ``grid_<class>.png`` per class with class_name=all.
    """
    check_values(cfg, "generate")
    device = resolve_device(cfg.device)
    module, _ = load_module(cfg.ckpt_path, device, DiffusionModule, cfg.trusted_classes)
    check_steps("steps", cfg.steps, cfg.sampler, module.schedule.timesteps)
    out = Path(cfg.output_dir)
    # One generator for the whole run: the same seed (and batch_size) gives the same images on any device.
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.class_name is not None:
        check_class_name("class_name", cfg.class_name, module.class_names, module.num_classes)
    if cfg.class_name == ALL_CLASSES:
        # class names come from the checkpoint: inside() keeps every file under output_dir
        sets = [(label, inside(out / "images", name), inside(out, f"grid_{name}.png")) for label, name
                in enumerate(module.class_names or [str(i) for i in range(module.num_classes)])]
    else:
        sets = [(None if cfg.class_name is None else module.class_index(cfg.class_name), out / "images",
                 out / "grid.png")]
    with output_folder(out, inputs=[Path(cfg.ckpt_path)]) as folder:
        folder.claim(*(path.relative_to(out) for _, images_dir, grid_path in sets
                       for path in (grid_path, *_image_paths(images_dir, cfg.num_images))))
        if cfg.class_name is None and module.num_classes:
            log.info("Conditional model and no class_name: sampling unconditionally (classes: %s).",
                     module.class_names)
        return [path for label, images_dir, grid_path in sets
                for path in _sample_set(cfg, module, label, generator, images_dir, grid_path)]


def _image_paths(images_dir: Path, count: int) -> list[Path]:
    return [images_dir / f"{i:05d}.png" for i in range(count)]


def to_pil(image: torch.Tensor) -> Image.Image:
    """A CHW sample in [0, 1] as an RGB PIL image, rounded as torchvision's ``save_image`` rounds (the PNGs)."""
    return Image.fromarray(image.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy())


def _sample_set(cfg: DictConfig, module: DiffusionModule, label: int | None, generator: torch.Generator,
                images_dir: Path, grid_path: Path) -> list[Path]:
    """``cfg.num_images`` images of class ``label`` (None: unconditional) as PNGs in ``images_dir``, each batch
    written as soon as it is made, then a grid."""
    images_dir.mkdir(parents=True, exist_ok=True)
    labels = None if label is None else torch.full((cfg.num_images,), label, dtype=torch.long)
    batches = module.sample_batches(cfg.num_images, sampler=cfg.sampler, steps=cfg.steps, eta=cfg.eta,
                                    generator=generator, labels=labels, guidance_scale=cfg.guidance_scale,
                                    use_ema=cfg.use_ema, progress=cfg.progress, batch_size=cfg.batch_size)
    if cfg.progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="batches", unit="batch", total=math.ceil(cfg.num_images / cfg.batch_size))
    images, paths = [], _image_paths(images_dir, cfg.num_images)
    for batch in batches:
        for image in batch.cpu():
            with atomic_path(paths[len(images)]) as tmp:
                to_pil(image).save(tmp, format="png")
            images.append(image)
    grid = make_grid(torch.stack(images), nrow=math.ceil(math.sqrt(cfg.num_images)), padding=2, pad_value=1.0)
    with atomic_path(grid_path) as tmp:
        save_image(grid, tmp, format="png")
    log.info("Wrote %d images to %s and the grid to %s", len(paths), images_dir, grid_path)
    return paths
