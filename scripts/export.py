"""Export a trained checkpoint as a folder to share and load with art_diffusion.load_pretrained. Examples:

    python scripts/export.py ckpt_path=outputs/<date>/<time> output_dir=exported/reconstructor
    python scripts/export.py ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt output_dir=exported/onnx format=onnx
"""

import hydra
from omegaconf import DictConfig

from art_diffusion.pretrained.export import export
from art_diffusion.run.cli import prepare_cli, user_errors


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    prepare_cli()
    main()
