"""train(cfg): build everything from the composed Hydra config, fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from art_diffusion.checkpoints import check_checkpoint_fits
from art_diffusion.run.hparams import log_hparams, run_hparams
from art_diffusion.run.requeue import checkpoint_before_requeue, cluster_plugins
from art_diffusion.run.resume import AUTO, auto_resumed_config, resumed_config
from art_diffusion.run.run_dir import METRICS_FILE
from art_diffusion.storage import atomic_write

log = logging.getLogger(__name__)

# The frozen VGG of the perceptual loss stays in eval mode on purpose; Lightning would warn about it every fit.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return callback.best_model_path
    return None


def _checkpoint_epoch(path: str) -> int:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]


def _scalars(metrics: dict, prefixes: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefixes)}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured module on the configured data; returns the final ``val/*`` and ``test/*`` metrics.

    Also ``best_epoch``, the epoch of the best checkpoint. The metrics are logged with the run's hyperparameters
    (TensorBoard's HPARAMS tab); scripts/train.py returns the one named by ``cfg.optimized_metric`` to sweepers.
    """
    if cfg.get("resume") == AUTO:
        cfg = auto_resumed_config(cfg)
    elif cfg.get("resume"):
        cfg = resumed_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    module: L.LightningModule = instantiate(cfg.model)
    module.run_config = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c is not None]
    plugins = cluster_plugins()  # under SLURM: Lightning's SLURM environment, without a requeue of its own
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers,
                                     **({"plugins": plugins} if plugins else {}))

    if cfg.get("ckpt_path"):  # fail before training with the file and the mismatching keys named
        check_checkpoint_fits(module, cfg.ckpt_path)
    try:
        with checkpoint_before_requeue():  # under submitit (SLURM): its requeue signal saves last.ckpt first
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except SIGTERMException:
        log.warning("Stopped by SIGTERM. Continue with: python scripts/train.py resume=%s", cfg.paths.output_dir)
        raise SystemExit(143) from None  # 128 + SIGTERM, as if the signal had killed us: the job did not finish
    metrics = _scalars(trainer.callback_metrics, ("val/",))
    best = _best_checkpoint(trainer)
    if best:
        metrics["best_epoch"] = _checkpoint_epoch(best)

    if cfg.get("test"):
        log.info("Testing %s", best or "the final weights (no best checkpoint was saved)")
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics |= _scalars(trainer.callback_metrics, ("test/",))
    log_hparams(trainer.loggers, run_hparams(cfg), metrics, step=trainer.global_step)

    if trainer.is_global_zero:
        path = Path(cfg.paths.output_dir) / METRICS_FILE
        atomic_write(path, json.dumps(metrics, indent=2) + "\n")
        log.info("Metrics written to %s: %s", path, metrics)
    return metrics
