"""model=ddpm end to end through the real Hydra config, Trainer, callbacks, checkpoints and TensorBoard files."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from art_diffusion.checkpoints import CONFIG_KEY
from art_diffusion.lightning import DiffusionModule
from art_diffusion.lightning.diffusion_module import CLASS_NAMES_KEY
from art_diffusion.run.train import train

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*"),
]

DDPM = ["model=ddpm", "model.schedule.timesteps=50", "callbacks.samples.num_images=4", "callbacks.samples.steps=3"]


def test_model_ddpm_swaps_module_net_and_loss_defaults(compose_cfg):
    cfg = compose_cfg(*DDPM)
    assert cfg.model._target_ == "art_diffusion.lightning.DiffusionModule"
    assert cfg.model.net._target_ == "art_diffusion.nets.UNet"
    assert compose_cfg(*DDPM, "model/net=conv_denoiser").model.net._target_ == "art_diffusion.nets.ConvDenoiser"
    assert cfg.loss.perceptual_weight == 0  # eps-MSE only by default
    assert cfg.callbacks.samples.dirpath.endswith("samples")
    assert compose_cfg().model._target_ == "art_diffusion.lightning.ReconstructionModule"  # default unchanged


def test_ddpm_run_logs_losses_samples_and_saves_ema_in_loadable_checkpoints(compose_cfg, tmp_path):
    out = tmp_path / "run"
    metrics = train(compose_cfg(*DDPM, "trainer.max_epochs=2"))

    assert {"val/loss", "val/mse", "test/loss", "test/mse"} <= set(json.loads((out / "metrics.json").read_text()))
    assert metrics["val/loss"] == metrics["val/mse"] and metrics["val/loss"] < 2.0

    checkpoint = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    assert checkpoint[CONFIG_KEY]["model"]["_target_"] == "art_diffusion.lightning.DiffusionModule"
    ema_keys = [k for k in state if k.startswith("ema.average.")]
    assert len(ema_keys) == len([k for k in state if k.startswith("net.")]) > 0
    assert state["ema.num_updates"] > 0
    # the average lags the trained weights
    assert not torch.equal(state["ema.average.out.2.weight"], state["net.out.2.weight"])

    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_000.png", "epoch_001.png"]
    events = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"train/loss_epoch", "val/loss"} <= set(events.Tags()["scalars"])
    samples = events.Images("visuals/samples")
    assert len(samples) == 2
    assert (samples[0].width, samples[0].height) == (2 * 258 + 2, 2 * 258 + 2)  # 4 samples of 32 (x8) px, 2x2 grid
    # the generic reconstructions grid shows inputs / noised / denoised for a diffusion model
    assert events.Images("visuals/reconstructions")[0].height == 3 * 258 + 2


def test_conditional_ddpm_checks_the_class_count_and_stores_class_names(compose_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"model.num_classes=7"):
        train(compose_cfg(*DDPM, "model.num_classes=3", "+trainer.fast_dev_run=true"))

    train(compose_cfg(*DDPM, "model.num_classes=7", "trainer.max_epochs=1", "test=false",
                      "callbacks.samples.max_classes=3"))
    out = tmp_path / "run"
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    classes = checkpoint[CLASS_NAMES_KEY]
    assert classes[:2] == ["brush_strokes", "geometric"] and len(classes) == 7
    assert "net.class_emb.weight" in checkpoint["state_dict"]

    # the training-time grids: one per class, all from the same noise, in TensorBoard and as PNGs; at most
    # callbacks.samples.max_classes of them per epoch (the first three classes in epoch 0)
    assert sorted(p.name for p in (out / "samples").iterdir()) == sorted(f"epoch_000_{c}.png" for c in classes[:3])
    events = EventAccumulator(str(out), size_guidance={"images": 0})
    events.Reload()
    logged = {tag for tag in events.Tags()["images"] if tag.startswith("visuals/samples/")}
    assert logged == {f"visuals/samples/{c}" for c in classes[:3]}
    grids = {c: events.Images(f"visuals/samples/{c}")[0].encoded_image_string for c in classes[:2]}
    assert grids["brush_strokes"] != grids["geometric"]  # the class changes what the same noise becomes


def test_class_grids_rotate_through_the_classes_at_most_max_classes_per_epoch():
    from art_diffusion.lightning import SampleLogger

    every = SampleLogger("unused", every_n_epochs=2, max_classes=8)
    seen = [every.classes_this_epoch(60, epoch) for epoch in range(1, 16, 2)]  # the epochs that log grids
    assert all(len(labels) == 8 for labels in seen) and seen[0] == list(range(8)) and seen[1] == list(range(8, 16))
    assert sorted({label for labels in seen for label in labels}) == list(range(60))  # every class within 8 grids
    assert seen[7] == sorted([56, 57, 58, 59, 0, 1, 2, 3])  # wraps around
    assert SampleLogger("unused", max_classes=8).classes_this_epoch(7, 0) == list(range(7))
    assert SampleLogger("unused", max_classes=None).classes_this_epoch(60, 5) == list(range(60))


def test_sample_shapes_range_and_seed(compose_cfg):
    from hydra.utils import instantiate

    module: DiffusionModule = instantiate(compose_cfg(*DDPM).model)
    images = module.sample(3, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(ValueError, match="sampler"):
        module.sample(1, sampler="euler")


def test_generation_scores_callback_logs_fd_vgg_and_kid_to_tensorboard(compose_cfg, tmp_path):
    out = tmp_path / "run"
    train(compose_cfg(*DDPM, "trainer.max_epochs=2", "test=false", "callbacks.samples.every_n_epochs=2",
                      "callbacks.generation_scores.every_n_epochs=2", "callbacks.generation_scores.num_images=4",
                      "callbacks.generation_scores.steps=3", "callbacks.generation_scores.vgg_weights=random",
                      "callbacks.generation_scores.layer=8", "callbacks.generation_scores.input_size=32"))
    events = EventAccumulator(str(out), size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("val/fd_vgg", "val/kid"):
        (point,) = events.Scalars(tag)  # epoch 1 only: every 2 epochs, never in the sanity check
        assert point.value == point.value  # a number (not NaN)
    assert events.Scalars("val/fd_vgg")[0].value > 0
