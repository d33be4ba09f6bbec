"""Generate new art from noise with a diffusion checkpoint (`python scripts/train.py model=ddpm ...`). Examples:

    python scripts/generate.py ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt num_images=16 sampler=ddim steps=50
    python scripts/generate.py ckpt_path=CKPT sampler=ddpm seed=1 output_dir=samples/ddpm
    python scripts/generate.py ckpt_path=CKPT class_name=painting guidance_scale=3   # a conditional model
"""

import hydra
from omegaconf import DictConfig

from art_diffusion.run.cli import prepare_cli, user_errors
from art_diffusion.tools.generate import generate


@hydra.main(config_path="../conf", config_name="generate", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    generate(cfg)


if __name__ == "__main__":
    prepare_cli()
    main()
