"""Every config option composes with the real Hydra, and every object it describes can be built from it.

Options of the groups a user picks (experiment, model, data, trainer, loss, callbacks, logger, debug) are composed one
at a time and together where they interact (experiment x model, debug x model); what they describe is instantiated:
the LightningModule with its net and loss, the data module, the callbacks, the loggers and, where this machine can run
it, the Trainer.
GPU trainers are composed only (instantiating them needs a GPU).
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from art_diffusion.lightning import DiffusionModule, NetworkModule, ReconstructionModule
from art_diffusion.run.precision import resolve_trainer_precision
from tests.helpers.config import CONF_DIR, compose_train_cfg

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


GPU_TRAINERS = {"gpu", "ddp"}
#: Logger options whose package is an optional extra: (module, extra).
OPTIONAL_LOGGERS = {"wandb": "wandb", "mlflow": "mlflow"}
ENTRY_CONFIGS = sorted(p.stem for p in CONF_DIR.glob("*.yaml") if p.stem != "train")


def test_the_groups_have_the_options_the_readme_names():
    assert options("experiment") == ["article", "ddpm_cpu32", "ddpm_gpu64", "demo"]
    assert options("model/net") == ["conv_denoiser", "conv_diffusion", "diffusers_unet", "unet"]
    assert options("model") == ["ddpm", "reconstructor"]
    assert options("data") == ["art", "demo"]
    assert set(options("trainer")) == {"default", "cpu", "gpu", "ddp", "ddp_cpu"}
    assert options("logger") == ["csv", "many", "mlflow", "tensorboard", "wandb"]
    assert options("debug") == ["anomaly", "default", "fdr", "limit", "overfit", "profiler"]


def _compose(tmp_path: Path, *overrides: str):
    # the real defaults (no TINY): building a module resolves no VGG weights, the VGG is built lazily in setup()
    cfg = compose_train_cfg(tmp_path / "run", *overrides, tiny=False)
    GlobalHydra.instance().clear()
    return cfg


def _build_all(cfg, trainer: bool = True) -> dict:
    built = {
        "model": instantiate(cfg.model),
        "data": instantiate(cfg.data),
        "callbacks": [instantiate(c) for c in cfg.callbacks.values() if c is not None],
        "loggers": [instantiate(c) for c in cfg.logger.values() if c is not None],
    }
    if trainer:
        resolve_trainer_precision(cfg)  # as train() does: trainer.precision=auto -> this machine's precision
        built["trainer"] = instantiate(cfg.trainer, callbacks=built["callbacks"], logger=built["loggers"])
    return built


#: Presets that choose their own model (model=ddpm): composed and built by test_ddpm_presets_compose_and_build.
DDPM_PRESETS = ["ddpm_cpu32", "ddpm_gpu64"]


@pytest.mark.parametrize(("experiment", "model"), list(itertools.product(
    [e for e in options("experiment") if e not in DDPM_PRESETS], options("model"))))
def test_every_experiment_with_every_model_composes_and_instantiates(tmp_path, experiment, model):
    cfg = _compose(tmp_path, f"experiment={experiment}", f"model={model}", "trainer=cpu")
    OmegaConf.resolve(cfg.model)  # every interpolation of the module config resolves
    built = _build_all(cfg)
    module = built["model"]
    assert isinstance(module, NetworkModule) and isinstance(module.net, torch.nn.Module)
    assert isinstance(module, DiffusionModule if model == "ddpm" else ReconstructionModule)
    assert isinstance(built["data"], L.LightningDataModule) and isinstance(built["trainer"], L.Trainer)
    assert built["trainer"].max_epochs == {"demo": 14, "article": 150}.get(experiment, built["trainer"].max_epochs)
    if experiment == "article":  # the article's network and schedule
        assert cfg.model.net.base_channels == 64 and cfg.scheduler.step_size == 30


def test_every_experiment_model_file_is_picked_by_an_experiment_and_a_model():
    """conf/train.yaml picks experiment_model=<experiment>_<model> as an optional default: a file whose name is not an
    existing pair (a typo, a renamed model) would never be applied, and nothing else would say so."""
    pairs = {f"{e}_{m}" for e in options("experiment") for m in options("model")}
    assert options("experiment_model") and set(options("experiment_model")) <= pairs


@pytest.mark.parametrize(("model", "lr"), [("reconstructor", 7e-3), ("ddpm", 3e-3)])
def test_the_demo_learning_rate_follows_the_model_and_yields_to_the_command_line(tmp_path, model, lr):
    """The article's network trains best at 7e-3 in the demo; the DDPM's UNet stalls there (BENCHMARKS.md)."""
    assert _compose(tmp_path, "experiment=demo", f"model={model}").optim.lr == pytest.approx(lr)
    assert _compose(tmp_path, "experiment=demo", f"model={model}", "optim.lr=2e-4").optim.lr == pytest.approx(2e-4)
    assert _compose(tmp_path, f"model={model}").optim.lr == pytest.approx(1e-3)  # no experiment: the article's


@pytest.mark.parametrize("preset", DDPM_PRESETS)
def test_ddpm_presets_compose_and_build(tmp_path, preset):
    cfg = _compose(tmp_path, f"experiment={preset}", "data.root=/data/art")
    OmegaConf.resolve(cfg.model)
    assert cfg.model.net._target_ == "art_diffusion.nets.UNet"
    assert cfg.trainer.precision == {"ddpm_cpu32": "auto", "ddpm_gpu64": "bf16-mixed"}[preset]
    assert cfg.data.test_fraction > 0 and cfg.data.cache  # a held-out split to score against
    built = _build_all(cfg, trainer=preset == "ddpm_cpu32")  # the GPU preset's Trainer needs a GPU
    assert isinstance(built["model"], DiffusionModule) and built["model"].prediction == "v"
    assert built["model"].net.image_size == cfg.data.image_size


@pytest.mark.parametrize(("preset", "net"), list(itertools.product(DDPM_PRESETS, ["unet", "diffusers_unet"])))
def test_both_unets_build_in_every_ddpm_preset(tmp_path, preset, net):
    """The presets size a UNet (levels, blocks, attention): ours and diffusers' take the same keys."""
    cfg = _compose(tmp_path, f"experiment={preset}", f"model/net={net}", "data.root=/data/art")
    module = instantiate(cfg.model)
    x, t = torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size), torch.tensor([0, 999])
    assert module.net(x, t).shape == x.shape


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_composes_and_the_cpu_ones_instantiate(tmp_path, trainer):
    cfg = _compose(tmp_path, f"trainer={trainer}")
    OmegaConf.resolve(cfg.trainer)
    if trainer in GPU_TRAINERS:
        assert cfg.trainer.accelerator == "gpu"  # composition only: building it needs a GPU
        bf16 = _compose(tmp_path, f"trainer={trainer}", "trainer.precision=bf16-mixed")
        assert bf16.trainer.precision == "bf16-mixed" and bf16.trainer.accelerator == "gpu"  # BENCHMARKS.md's GPU run
        if not torch.cuda.is_available():
            return
    built = _build_all(cfg)
    assert isinstance(built["trainer"], L.Trainer)


@pytest.mark.parametrize("data", options("data"))
def test_every_data_option_instantiates(tmp_path, data):
    datamodule = instantiate(_compose(tmp_path, f"data={data}").data)
    assert isinstance(datamodule, L.LightningDataModule)


@pytest.mark.parametrize(("group", "option"), [("loss", o) for o in options("loss")]
                         + [("callbacks", o) for o in options("callbacks")]
                         + [("logger", o) for o in options("logger")])
def test_every_loss_callbacks_and_logger_option_instantiates(tmp_path, group, option):
    cfg = _compose(tmp_path, f"{group}={option}")
    if group == "logger" and option in OPTIONAL_LOGGERS and importlib.util.find_spec(option) is None:
        pytest.skip(f"logger={option} composes; building it needs the optional '{OPTIONAL_LOGGERS[option]}' extra")
    if (group, option) == ("logger", "mlflow"):  # building it creates its SQLite store (~8 s of CPU)
        pytest.skip("logger=mlflow composes; test_loggers.py builds it and trains with it")
    node = cfg[group]
    built = instantiate(node) if "_target_" in node else [instantiate(c) for c in node.values() if c is not None]
    assert built


@pytest.mark.parametrize(("debug", "model"), list(itertools.product(options("debug"), options("model"))))
def test_every_debug_option_with_every_model_composes_and_instantiates(tmp_path, debug, model):
    cfg = _compose(tmp_path, f"debug={debug}", f"model={model}", "experiment=demo", "trainer=cpu")
    trainer = _build_all(cfg)["trainer"]
    assert not trainer.checkpoint_callbacks and cfg.hydra.run.dir.startswith("outputs/debug/")


def test_early_stopping_composes_with_every_callbacks_option(tmp_path):
    for option in options("callbacks"):
        cfg = _compose(tmp_path, f"callbacks={option}", "callbacks/early_stopping=default")
        callbacks = _build_all(cfg, trainer=False)["callbacks"]
        (stopper,) = [c for c in callbacks if isinstance(c, L.pytorch.callbacks.EarlyStopping)]
        assert stopper.monitor == "val/loss" and stopper.patience == 10


def test_optuna_search_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _compose(tmp_path, "hparams_search=optuna", "experiment=demo")
    assert cfg.hydra.sweeper.params["optim.lr"].startswith("tag(log")


@pytest.mark.parametrize("name", ENTRY_CONFIGS)
def test_every_tool_config_composes(name):
    required = {"reconstruct": ["ckpt_path=x.ckpt", "input=x.png"], "evaluate": ["ckpt_path=x.ckpt"],
                "generate": ["ckpt_path=x.ckpt"], "fd_vgg": ["real_dir=a", "fake_dir=b"],
                "export": ["ckpt_path=x.ckpt", "output_dir=x"]}[name]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=required)
    GlobalHydra.instance().clear()
    assert cfg.ckpt_path == "x.ckpt" if name != "fd_vgg" else cfg.real_dir == "a"


def test_an_override_whose_plugin_is_missing_stops_with_one_line(monkeypatch, capsys):
    from art_diffusion.run import cli

    assert cli.missing_extra(["experiment=demo"]) is None
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)  # as if the extra were not installed
    with pytest.raises(SystemExit) as stop:
        cli.prepare_cli(["experiment=demo", "hparams_search=optuna"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "hparams_search=optuna" in line and '".[optuna]"' in line


@pytest.mark.parametrize(("argv", "fix"), [(["model=conv_diffusion"], "use model=reconstructor"),
                                           (["optim.step_size=5"], "use scheduler.step_size"),
                                           (["optim=adam_steplr"], "use optim=adam scheduler=steplr")])
def test_a_renamed_option_or_key_stops_with_the_new_name(argv, fix, capsys):
    from art_diffusion.run import cli

    with pytest.raises(SystemExit) as stop:
        cli.prepare_cli(argv)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {argv[0]}: ") and fix in line
    cli.prepare_cli(["model=reconstructor", "scheduler.step_size=5", "optim.lr=0.1"])  # the current names pass


def test_an_unquoted_non_ascii_value_is_quoted_for_hydra_or_refused_with_the_fix(capsys):
    from art_diffusion.run import cli

    argv = cli.prepare_cli(["ckpt_path=x.ckpt", "class_name=живопис", "output_dir=выход/a-1"])
    assert argv == ["ckpt_path=x.ckpt", 'class_name="живопис"', 'output_dir="выход/a-1"']
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=argv)  # unquoted, Hydra's lexer fails on the Cyrillic letters
    GlobalHydra.instance().clear()
    assert (cfg.class_name, cfg.output_dir) == ("живопис", "выход/a-1")
    assert cli.prepare_cli(['class_name="живопис"']) == ['class_name="живопис"']  # already quoted: as typed
    with pytest.raises(SystemExit) as stop:
        cli.prepare_cli(["class_name=[живопис,b]"])  # a list: which parts are strings is for the user to say
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: class_name=[живопис,b]: Hydra reads unquoted values as ASCII only") and \
        "'class_name=[\"...\",\"...\"]'" in line
