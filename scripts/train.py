"""Train the ConvDiffusionModel. Examples:

    python scripts/train.py experiment=demo
    python scripts/train.py data.root=/data/art/training_set loss.perceptual_weight=0.5
    python scripts/train.py -m loss.perceptual_weight=0,0.5,1
"""

import hydra
from omegaconf import DictConfig

from art_diffusion.train import train


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
