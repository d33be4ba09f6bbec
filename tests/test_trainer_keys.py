"""Trainer keys a researcher turns (gradient clipping, gradient accumulation) and early stopping, on real fits."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import GradClipAlgorithmType

from art_diffusion.run.precision import resolve_trainer_precision
from art_diffusion.run.train import train

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*"),
]

DDPM = ["model=ddpm", "model.schedule.timesteps=50", "callbacks.samples.num_images=4", "callbacks.samples.steps=3"]


def _trainer(cfg):
    resolve_trainer_precision(cfg)  # as train() does
    return instantiate(cfg.trainer)


def test_clipping_and_accumulation_reach_the_trainer(compose_cfg):
    default = _trainer(compose_cfg())
    assert (default.gradient_clip_val, default.accumulate_grad_batches) == (None, 1)
    assert _trainer(compose_cfg(*DDPM)).gradient_clip_val == 1.0  # DDPM clips the gradient norm at 1

    trainer = _trainer(compose_cfg("trainer.gradient_clip_val=0.5", "trainer.gradient_clip_algorithm=value",
                                   "trainer.accumulate_grad_batches=3"))
    assert trainer.gradient_clip_val == 0.5 and trainer.gradient_clip_algorithm == GradClipAlgorithmType.VALUE
    assert trainer.accumulate_grad_batches == 3


@pytest.mark.slow  # two whole runs
def test_accumulation_steps_once_every_n_batches(compose_cfg, tmp_path):
    train(compose_cfg("data.batch_size=2", "trainer.accumulate_grad_batches=2", "test=false"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    plain = tmp_path / "plain"
    train(compose_cfg("data.batch_size=2", "test=false", output_dir=plain))
    steps = torch.load(plain / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert steps > 4 and state["global_step"] == (steps + 1) // 2


@pytest.mark.slow  # three epochs
def test_early_stopping_is_off_by_default_and_stops_a_run_that_does_not_improve(compose_cfg, tmp_path):
    assert "early_stopping" not in compose_cfg().callbacks
    # lr=1e-12 (0 is refused): Adam moves each weight by about lr per step, so val/loss (fixed timesteps and noise)
    # changes by far less than min_delta
    cfg = compose_cfg(*DDPM, "callbacks/early_stopping=default", "callbacks.early_stopping.patience=2",
                      "callbacks.early_stopping.min_delta=1e-4", "optim.lr=1e-12", "trainer.max_epochs=10",
                      "callbacks.samples.every_n_epochs=100", "test=false")
    assert cfg.callbacks.early_stopping.monitor == "val/loss"
    train(cfg)
    # epoch 0 sets the best, epochs 1 and 2 do not improve on it: stopped after 3 of 10 epochs (one grid each)
    grids = sorted(p.name for p in (tmp_path / "run" / "reconstructions").iterdir())
    assert grids == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]
