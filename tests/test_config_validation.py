"""Config values are checked before any work (issue 11, section 5): one message naming key, value, range and fix;
a zero split fraction skips its stage and the run completes."""

import json
import math
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from art_diffusion import UserError
from art_diffusion.run.job import run_job
from art_diffusion.run.train import train
from tests.helpers.config import CONF_DIR, compose_train_cfg

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")

BAD_VALUES = [  # override, what the message must say
    ("loss.perceptual_weight=-1", r"loss.perceptual_weight=-1 must be a finite number ≥ 0"),
    ("loss.mse_weight=-1", r"loss.mse_weight=-1 must be a finite number ≥ 0"),
    ("loss.perceptual_weight=abc", r"loss.perceptual_weight='abc' must be a finite number ≥ 0"),
    ("data.image_size=0", r"data.image_size=0 must be an integer in \[8, 4096\]"),
    ("data.image_size=60", r"data.image_size=60 must be a multiple of 8.*data.image_size=64"),
    ("data.val_fraction=1.5", r"data.val_fraction=1.5 must be a finite number in \[0, 1\)"),
    ("data.batch_size=0", r"data.batch_size=0 must be an integer in \[1, 65536\]"),
    ("trainer.max_epochs=0", r"trainer.max_epochs=0 must be an integer in \[1, 1000000\]"),
    ("optim.lr=0", r"optim.lr=0 must be a finite number > 0"),
    ("scheduler.step_size=2.5", r"scheduler.step_size=2.5 must be an integer in \[1, 1000000\]"),
    ("callbacks.reconstructions.num_images=0", r"reconstructions.num_images=0 must be an integer in \[1, 1024\]"),
    ("model.net.base_channels=-4", r"model.net.base_channels=-4 must be an integer in \[1, 4096\]"),
    ("trainer.devices=0", r"trainer.devices=0 must be a count ≥ 1"),
    ("optim.lr=inf", r"optim.lr=inf must be a finite number > 0"),
    ("cpu_memory=keep", r"cpu_memory='keep' must be one of reuse, release"),
    ("optim.lr=1e400", r"optim.lr=inf must be a finite number > 0"),
    ("loss.perceptual_weight=nan", r"loss.perceptual_weight=nan must be a finite number ≥ 0"),
    ("loss.mse_weight=-inf", r"loss.mse_weight=-inf must be a finite number ≥ 0"),
    ("model.net.base_channels=1000000000", r"model.net.base_channels=1000000000 must be an integer in \[1, 4096\]"),
]
BAD_PAIRS = [
    (("loss.mse_weight=0", "loss.perceptual_weight=0"), r"loss.mse_weight=0 and loss.perceptual_weight=0"),
    (("data.val_fraction=0.6", "data.test_fraction=0.4"), r"their sum must be < 1"),
    (("model=ddpm", "model.ema_decay=1"), r"model.ema_decay=1 must be a finite number in \[0, 1\)"),
    (("data.feature_store=true", "data.cache=false"), r"data.feature_store=true needs the pixel cache"),
    (("data.feature_store=true", "data.hflip=true"), r"data.feature_store=true stores the unflipped images"),
    (("data.feature_store=maybe",), r"data.feature_store='maybe' must be one of auto, True, False"),
    (("model=ddpm", "callbacks.samples.steps=2000"), r"callbacks.samples.steps=2000 must be at most"),
    (("model=ddpm", "model.schedule.kind=bogus"), r"model.schedule.kind='bogus' must be one of linear, cosine"),
    (("model=ddpm", "model.prediction=noise"), r"model.prediction='noise' must be one of eps, v, x0"),
    (("model=ddpm", "data.image_size=40", "model.net.channel_mults=[1,2,2,2,2]"),
     r"model.net.image_size=40 must be divisible by 2\*\*\(levels - 1\) = 16"),
    (("model=ddpm", "model/net=conv_diffusion"), r"model/net=conv_diffusion is a network of another model than "
                                                 r"DiffusionModule: choose model/net=unet or"),
    (("model/net=unet",), r"model/net=unet is a network of another model than ReconstructionModule"),
    (("model=ddpm", "model.net.num_classes=3"), r"model.net.num_classes=3 must equal model.num_classes=None"),
    (("model=ddpm", "model.image_size=48"), r"model.image_size=48 must equal data.image_size=32"),
    (("seed=null",), r"data.seed=None must be an integer in \[0, 4294967295\]"),
    (("trainer.accelerator=cpu", "trainer.devices=-1"), r"trainer.devices=-1 means every GPU.*trainer.devices=1"),
    (("model=ddpm", "loss=hybrid"), r"loss=hybrid is the loss of another model than DiffusionModule: choose "
                                    r"loss=diffusion"),
    (("trainer.num_nodes=2",), r"trainer.num_nodes=2 but this process was not started on a cluster"),
    (("trainer.precision=16-mixed",), r"trainer.precision=16-mixed is float16, which needs a GPU"),
    (("test=no",), r"test='no' must be one of True, False"),
]


@pytest.mark.parametrize(("overrides", "message"), [((o,), m) for o, m in BAD_VALUES] + BAD_PAIRS)
def test_bad_values_are_refused_before_any_work(compose_cfg, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        train(compose_cfg(*overrides))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # no report, no checkpoint, no log


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_every_device_on_a_machine_without_a_gpu_is_one_message(compose_cfg):
    with pytest.raises(UserError, match=r"trainer.devices=-1 means every GPU, and trainer.accelerator=auto"):
        train(compose_cfg("trainer.accelerator=auto", "trainer.devices=-1"))


def test_rules_that_do_not_apply_are_not_checked(compose_cfg):
    from art_diffusion.run.validate import check_values

    # the ddpm sampler walks every timestep and ignores steps; generation scores are off by default
    check_values(compose_cfg("model=ddpm", "model.schedule.timesteps=20", "callbacks.samples.sampler=ddpm",
                             "callbacks.samples.steps=50"))
    with pytest.raises(UserError, match=r"callbacks.generation_scores.steps=20 must be at most .*=10 \(e.g. "
                                        r"callbacks.generation_scores.steps=10\)"):
        check_values(compose_cfg("model=ddpm", "model.schedule.timesteps=10", "callbacks.samples.steps=5",
                                 "callbacks.generation_scores.every_n_epochs=1"))


def _numeric_leaves(node, prefix=""):
    for key in node:
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key) or f"{prefix}{key}" == "hydra":
            continue
        value = node[key]
        if OmegaConf.is_dict(value):
            yield from _numeric_leaves(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}"


def test_every_numeric_key_in_conf_has_a_rule(tmp_path):
    """A numeric key added to conf/ later fails here until run/validate.py gives it a range."""
    from art_diffusion.run.validate import CHECKED_BY_RELATIONS, TOOL_RULES

    unchecked = set()
    for overrides in ([], ["model=ddpm"], ["experiment=demo"], ["experiment=article"]):
        cfg = compose_train_cfg(tmp_path / "run", *overrides, tiny=False)
        unchecked |= set(_numeric_leaves(cfg)) - set(TOOL_RULES["train"]) - set(CHECKED_BY_RELATIONS)
    for tool in ("reconstruct", "generate", "evaluate", "fd_vgg"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(tool)
        unchecked |= {f"{tool}: {k}" for k in set(_numeric_leaves(cfg)) - set(TOOL_RULES[tool])}
    GlobalHydra.instance().clear()
    assert unchecked == set()


def test_zero_validation_fraction_skips_validation_and_keeps_the_lowest_train_loss(compose_cfg, tmp_path):
    value = run_job(compose_cfg("data.val_fraction=0"))
    assert math.isnan(value)  # optimized_metric (val/psnr) does not exist without validation: NaN, no error
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert not any(k.startswith("val/") for k in metrics) and {"test/psnr", "best_epoch"} <= set(metrics)
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_zero_test_fraction_skips_the_test(compose_cfg, tmp_path):
    value = run_job(compose_cfg("data.test_fraction=0"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert value == metrics["val/psnr"] and not any(k.startswith("test/") for k in metrics)


class RefusesItsArgument:
    """A class whose constructor raises a user error (as DiffusersUNet does without its optional package)."""

    def __init__(self, value: str) -> None:
        raise UserError(f"value={value!r} cannot be used")


def test_a_user_error_wrapped_by_hydra_instantiate_is_still_one_message():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from art_diffusion.run.cli import user_error_in

    with pytest.raises(InstantiationException) as info:
        instantiate({"_target_": f"{__name__}.RefusesItsArgument", "value": "bogus"})
    assert isinstance(user_error_in(info.value), UserError)
    assert "value='bogus' cannot be used" in str(user_error_in(info.value))
    assert user_error_in(RuntimeError("a bug")) is None


@pytest.mark.slow  # runs the script end to end (in-process: run_script)
def test_a_refused_command_leaves_no_run_dir_and_a_live_runs_dir_is_left_alone(tmp_path):
    from tests.helpers.scripts import run_script

    def train(*overrides: str):
        return run_script("train", *overrides, cwd=tmp_path)

    refused = train("optim.lr=-1")
    assert refused.returncode == 2 and "optim.lr=-1 must be a finite number > 0" in refused.stderr
    assert not (tmp_path / "outputs").exists()  # Hydra's outputs/<date>/<time>/ with .hydra/ and train.log: gone
    other = tmp_path / "other-run"  # a dir with anything of its own keeps it, the record of this call included
    (other / "checkpoints").mkdir(parents=True)
    assert train("optim.lr=-1", f"hydra.run.dir={other}").returncode == 2
    assert (other / "checkpoints").is_dir() and (other / ".hydra" / "config.yaml").is_file()


def test_the_metrics_a_run_is_said_to_log_are_the_ones_it_logs(tiny_run, tmp_path):
    """logged_metrics (what optimized_metric and every callback's monitor are checked against before training) is
    what a real run writes to metrics.json, stage for stage."""
    from art_diffusion.run.validate import logged_metrics

    written = {k for k in json.loads((tiny_run / "metrics.json").read_text()) if k.startswith(("val/", "test/"))}
    said = {k for k in logged_metrics(compose_train_cfg(tmp_path)) if k.startswith(("val/", "test/"))}
    assert said == written


@pytest.mark.parametrize(("overrides", "named"), [
    (("model=ddpm", "optimized_metric=val/psnr"), "optimized_metric='val/psnr' is not a metric this run logs"),
    (("callbacks.best_checkpoint.monitor=val/nonexist",), "callbacks.best_checkpoint.monitor='val/nonexist'"),
    (("loss.perceptual_weight=0", "callbacks/early_stopping=default",
      "callbacks.early_stopping.monitor=val/perceptual"), "callbacks.early_stopping.monitor='val/perceptual'"),
])
def test_a_metric_the_run_never_logs_is_refused_before_training(tmp_path, overrides, named):
    from art_diffusion.run.validate import check_values

    with pytest.raises(UserError, match=re.escape(named)):
        check_values(compose_train_cfg(tmp_path, *overrides), "train")
