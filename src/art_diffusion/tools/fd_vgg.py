"""fd_vgg(cfg): FD-VGG and KID between a folder of real images and one of generated images, printed and saved as
JSON."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from art_diffusion import MissingPathError
from art_diffusion.metrics.fd_vgg import fd_vgg_folders
from art_diffusion.run.validate import check_values
from art_diffusion.storage import json_text, write_json
from art_diffusion.tools.inputs import resolve_device

log = logging.getLogger(__name__)


def fd_vgg(cfg: DictConfig) -> dict:
    """The FD-VGG of ``cfg.fake_dir`` against ``cfg.real_dir`` with the settings it was computed at."""
    check_values(cfg, "fd_vgg")
    for key in ("real_dir", "fake_dir"):  # named by their keys, before any weights are loaded
        folder = Path(str(cfg[key])).expanduser()
        if not str(cfg[key]).strip() or not folder.is_dir():
            what = "is empty" if not str(cfg[key]).strip() else "is a file, not a folder" if folder.exists() else \
                "does not exist"
            raise MissingPathError(f"{key}={str(cfg[key])!r} {what}: pass a folder of images, e.g. {key}=samples/")
    result = fd_vgg_folders(cfg.real_dir, cfg.fake_dir, image_size=cfg.image_size, max_images=cfg.max_images,
                            weights=cfg.vgg_weights, layer=cfg.layer, input_size=cfg.input_size,
                            batch_size=cfg.batch_size, device=resolve_device(cfg.device))
    result |= {k: cfg[k] for k in ("image_size", "input_size", "layer", "vgg_weights")}
    log.info("FD-VGG %.4f, KID %.5f ± %.5f (%d real images from %s, %d generated from %s)", result["fd_vgg"],
             result["kid"], result["kid_std"], result["num_real"], cfg.real_dir, result["num_fake"], cfg.fake_dir)
    if cfg.output_json:
        write_json(cfg.output_json, result)
    print(json_text(result, indent=None), end="")
    return result
