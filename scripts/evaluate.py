"""Evaluate checkpoints: MSE, PSNR, SSIM, VGG perceptual distance and LPIPS, as a table and metrics.json. Examples:

    python scripts/evaluate.py ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt            # its test split
    python scripts/evaluate.py ckpt_path=... data.root=/data/art/validation_set
    python scripts/evaluate.py ckpt_path='[run_a/checkpoints/best.ckpt,run_b/checkpoints/best.ckpt]'
"""

import hydra
from omegaconf import DictConfig

from art_diffusion.run.cli import prepare_cli, user_errors
from art_diffusion.tools.evaluate import evaluate


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    prepare_cli()
    main()
