"""FD-VGG between real and generated images (Fréchet distance in VGG16 ImageNet feature space; not FID). Example:

    python scripts/fd_vgg.py real_dir=../shared/data/art-dev image_size=32 \
        fake_dir=outputs/generate/<date>/<time>/images
"""

import hydra
from omegaconf import DictConfig

from art_diffusion.run.cli import prepare_cli, user_errors
from art_diffusion.tools.fd_vgg import fd_vgg


@hydra.main(config_path="../conf", config_name="fd_vgg", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    fd_vgg(cfg)


if __name__ == "__main__":
    prepare_cli()
    main()
