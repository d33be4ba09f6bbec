"""End-to-end runs of train(cfg) through the real Hydra config, Trainer, callbacks and TensorBoard files."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from art_diffusion.run.train import train
from tests.helpers.config import TINY
from tests.helpers.scripts import run_script

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


def test_fast_dev_run_composes_and_trains(compose_cfg):
    metrics = train(compose_cfg("+trainer.fast_dev_run=true"))
    assert "val/loss" in metrics and "test/psnr" in metrics


def test_run_writes_tensorboard_checkpoints_grids_and_metrics(compose_cfg, tmp_path):
    out = tmp_path / "run"
    metrics = train(compose_cfg("trainer.max_epochs=2", "callbacks.periodic_checkpoint.every_n_epochs=1"))

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    assert {"val/loss", "val/mse", "val/perceptual", "val/psnr", "val/ssim", "test/psnr", "test/ssim"} <= set(saved)

    checkpoints = {p.name for p in (out / "checkpoints").iterdir()}
    assert {"best.ckpt", "last.ckpt", "epoch_000.ckpt", "epoch_001.ckpt"} <= checkpoints
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == ["epoch_000.png", "epoch_001.png"]

    events = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss_epoch", "train/mse_epoch", "train/perceptual_epoch", "val/loss", "val/psnr",
            "val/ssim"} <= set(tags["scalars"])
    images = events.Images("visuals/reconstructions")
    assert len(images) == 2
    # 4 inputs above 4 reconstructions, 32 px each enlarged 8x to 256 px, with 2 px padding
    assert (images[0].width, images[0].height) == (4 * 258 + 2, 2 * 258 + 2)


def test_resume_from_last_checkpoint_continues_the_epoch_count(compose_cfg, tmp_path):
    first = compose_cfg("trainer.max_epochs=1", "test=false", output_dir=tmp_path / "first")
    train(first)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0

    resumed = compose_cfg("trainer.max_epochs=2", "test=false", f"ckpt_path={last}", output_dir=tmp_path / "second")
    train(resumed)
    state = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1
    assert state["global_step"] == 2 * torch.load(last, weights_only=True)["global_step"]


@pytest.mark.slow
def test_multirun_gives_one_run_dir_per_job(tmp_path, demo_root):
    overrides = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    result = run_script("train", "-m", *overrides, f"data.root={demo_root}", "+trainer.fast_dev_run=true",
                        "loss.perceptual_weight=0,0.5", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert runs == ["perceptual_weight=0", "perceptual_weight=0.5"]  # named after the swept value alone
    for run in runs:
        assert (tmp_path / "sweep" / run / "metrics.json").exists()


def test_last_checkpoint_follows_every_epoch_even_when_the_best_does_not_improve(compose_cfg, tmp_path):
    # "best" = the lowest epoch: only epoch 0 improves it. Lightning's save_last on that callback would leave
    # last.ckpt at epoch 0 (a resume would redo epochs 1 and 2); the project's last_checkpoint writes it every epoch.
    train(compose_cfg("trainer.max_epochs=3", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
                      "test=false", "callbacks.best_checkpoint.monitor=epoch", "callbacks.best_checkpoint.mode=min"))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["epoch"] == 0
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 2
    assert not list(checkpoints.glob("last-v*.ckpt"))
