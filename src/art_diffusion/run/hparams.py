"""The flat hyperparameters a run reports with its final metrics (TensorBoard's HPARAMS tab, any Lightning logger)."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

Scalar = int | float | str | bool


def _scalar(value) -> Scalar:
    # TensorBoard's hparams accept only numbers, strings and booleans.
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _override_hparams(cfg: DictConfig) -> dict[str, Scalar]:
    """The job's command-line overrides (a sweep's swept keys among them), read back from the resolved config."""
    if not HydraConfig.initialized():
        return {}
    params = {}
    for override in HydraConfig.get().overrides.task:
        key, _, text = override.lstrip("+~").partition("=")
        value = OmegaConf.select(cfg, key, default=None)
        # a group choice (trainer=cpu) selects a whole node: the choice's name says more than its contents
        params[key] = text if value is None or OmegaConf.is_config(value) else _scalar(value)
    return params


def run_hparams(cfg: DictConfig) -> dict[str, Scalar]:
    """The config keys listed in ``cfg.logged_hparams`` plus every overridden key, as flat ``key: scalar`` pairs."""
    params = {key: _scalar(OmegaConf.select(cfg, key, default=None)) for key in cfg.get("logged_hparams", [])}
    return params | _override_hparams(cfg)


def log_hparams(loggers: list[Logger], params: dict[str, Scalar], metrics: dict[str, float], step: int) -> None:
    """Log ``params`` with the run's final ``metrics`` (at the run's last ``step``, so no curve gets a stray point)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=metrics, step=step)  # the HPARAMS tab needs both in one call
        else:
            logger.log_hyperparams(params)
        logger.save()
