"""Reconstruct images with a trained checkpoint. Examples:

    python scripts/reconstruct.py ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt input=my_art/ output_dir=recon
    python scripts/reconstruct.py ckpt_path=... input='my_art/*.jpg' size=native device=cuda
"""

import hydra
from omegaconf import DictConfig

from art_diffusion.run.cli import prepare_cli, user_errors
from art_diffusion.tools.reconstruct import reconstruct


@hydra.main(config_path="../conf", config_name="reconstruct", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    reconstruct(cfg)


if __name__ == "__main__":
    prepare_cli()
    main()
