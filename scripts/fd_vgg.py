"""FD-VGG between real and generated images (Fréchet distance in VGG16 ImageNet feature space; not FID). Example:

    python scripts/fd_vgg.py real_dir=../shared/data/art-dev fake_dir=outputs/generate/<date>/<time>/images image_size=32
"""

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from art_diffusion.fd_vgg import fd_vgg_folders

log = logging.getLogger(__name__)


@hydra.main(config_path="../conf", config_name="fd_vgg", version_base="1.3")
def main(cfg: DictConfig) -> None:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    result = fd_vgg_folders(cfg.real_dir, cfg.fake_dir, image_size=cfg.image_size, max_images=cfg.max_images,
                            weights=cfg.vgg_weights, layer=cfg.layer, input_size=cfg.input_size,
                            batch_size=cfg.batch_size, device=device)
    result |= {k: cfg[k] for k in ("image_size", "input_size", "layer", "vgg_weights")}
    log.info("FD-VGG %.4f (%d real images from %s, %d generated from %s)", result["fd_vgg"], result["num_real"],
             cfg.real_dir, result["num_fake"], cfg.fake_dir)
    if cfg.output_json:
        Path(cfg.output_json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
