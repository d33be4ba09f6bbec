"""Train the ConvDiffusionModel. Examples:

    python scripts/train.py experiment=demo
    python scripts/train.py data.root=/data/art/training_set loss.perceptual_weight=0.5
    python scripts/train.py -m loss.perceptual_weight=0,0.5,1
    python scripts/train.py hparams_search=optuna
"""

import hydra
from omegaconf import DictConfig

from art_diffusion.run.cli import prepare_cli, user_errors
from art_diffusion.run.job import run_job
from art_diffusion.run.sweeps.summary import exit_if_sweep_failed


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> float:
    """Returns the final value of ``cfg.optimized_metric`` (what Optuna and other sweepers optimise)."""
    return run_job(cfg)


if __name__ == "__main__":
    prepare_cli()
    main()
    exit_if_sweep_failed()  # a multirun none of whose jobs completed exits with status 2
