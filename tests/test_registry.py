"""No config read from a file runs code: only the registry's classes are instantiated, checked on the object.

The hostile checkpoints go through the real scripts in a subprocess, as a colleague's shared file would; a marker
file that the payload would create must never appear.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from art_diffusion.checkpoints import CONFIG_KEY, load_checkpoint
from art_diffusion.checkpoints.registry import REGISTRY, UnsafeConfigError, check_targets
from art_diffusion.checkpoints.resume import resumed_config
from art_diffusion.tools.evaluate import evaluate
from art_diffusion.tools.generate import generate
from art_diffusion.tools.reconstruct import reconstruct
from tests.helpers.config import CONF_DIR, REPO, compose_train_cfg
from tests.helpers.scripts import run_script

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


def _targets(node, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            found.add(node["_target_"])
        for value in node.values():
            _targets(value, found)
    elif isinstance(node, list):
        for value in node:
            _targets(value, found)
    return found


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_target_in_conf_is_in_the_registry(tmp_path):
    """Adding a config class fails here until the registry (art_diffusion.checkpoints.registry.REGISTRY) lists it."""
    composed: set[str] = set()
    choices = [[f"experiment={e}", f"model={m}"] for e, m in itertools.product(_options("experiment"),
                                                                               _options("model"))]
    # every option of the other groups, several groups per composition (what is composed is checked below)
    groups = ("trainer", "data", "loss", "callbacks", "logger", "optim", "scheduler", "debug", "model/net")
    options = [[f"{group}={option}" for option in _options(group)] for group in groups]
    choices += [["model=ddpm", *(o for o in row if o is not None)] for row in itertools.zip_longest(*options)]
    choices += [["callbacks/early_stopping=default"]]
    for overrides in choices:
        cfg = compose_train_cfg(tmp_path / "run", *overrides, tiny=False)
        GlobalHydra.instance().clear()
        container = OmegaConf.to_container(cfg, resolve=False)
        container.pop("hydra")  # Hydra's own launcher and callbacks: never stored, never read back
        _targets(container, composed)
    # Hydra's own settings (conf/hydra/, an entry config's hydra: block) are never stored with a run
    written = {m for p in CONF_DIR.rglob("*.yaml") if "hydra" not in p.relative_to(CONF_DIR).parts
               for m in re.findall(r"^\s*_target_:\s*(\S+)", p.read_text().split("\nhydra:")[0], re.M)}
    assert written <= composed  # every option was composed
    assert composed <= set(REGISTRY), sorted(composed - set(REGISTRY))
    # no stale entries: each is in conf/, added by resume (moved run dirs) or swapped in by a documented command
    assert set(REGISTRY) - composed == {"art_diffusion.checkpoints.RebaseCheckpointPaths",
                                        "lightning.pytorch.profilers.AdvancedProfiler"}


@pytest.mark.parametrize(("node", "key_path"), [
    ({"net": {"_target_": "os.system", "command": "x"}}, "net._target_"),  # outside the packages: never imported
    ({"net": {"_target_": "art_diffusion.storage.atomic_write", "path": "x", "data": "y"}}, "net._target_"),
    ({"net": {"_target_": "art_diffusion.storage.files.os.system", "_args_": ["x"]}}, "net._args_"),
    ({"net": {"_target_": "art_diffusion.storage.files.os.system"}}, "net._target_"),  # a function under the package
    ({"net": {"_target_": "art_diffusion.storage.files.os"}}, "net._target_"),  # a module
    ({"net": {"_target_": "art_diffusion.nets.ConvDenoiser.__class__"}}, "net._target_"),  # a class, not registered
    ({"net": {"_target_": "art_diffusion.nets.ConvDenoiser.forward"}}, "net._target_"),
    ({"a": [{"b": [1, {"_target_": "art_diffusion.storage.atomic_write"}]}]}, "a[0].b[1]._target_"),  # nested
    ({"opt": {"_target_": "torch.optim.Adam", "_args_": [{"_target_": "torch.optim.Adam"}]}}, "opt._args_"),
    ({"opt": {"_target_": "art_diffusion.storage.atomic_write", "_partial_": True}}, "opt._target_"),
    ({"opt": {"_partial_": True, "x": 1}}, "opt._partial_"),
    ({"m": {"_target_": "art_diffusion.nets.ConvDenoiser", "_convert_": "all"}}, "m._convert_"),
    ({"m": {"_target_": "art_diffusion.nets.ConvDenoiser", "_recursive_": False}}, "m._recursive_"),
    ({"m": {"_target_": "${oc.env:EVIL}"}}, "m._target_"),  # an interpolation would pick the target later
    ({"m": {"_target_": "art_diffusion.nets.ConvDenoiser", "x": "${oc.env:HOME}"}}, "m.x"),
    ({"m": {"_target_": "art_diffusion.nets.ConvDenoiser", "x": "${0"}}, "m.x"),  # one OmegaConf cannot even parse
    ({"m": {"_target_": ["art_diffusion.nets.ConvDenoiser"]}}, "m._target_"),
    ({"m": {"_target_": "art_diffusion.nets.ConvDenoiser", "x": torch.zeros(1)}}, "m.x"),
])
def test_hostile_shapes_are_refused_naming_the_key(node, key_path):
    with pytest.raises(UnsafeConfigError, match=rf"Refusing evil\.ckpt: .* at '{re.escape(key_path)}'"):
        check_targets(node, "evil.ckpt")


def test_registered_classes_and_vouched_ones_pass():
    check_targets({"opt": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.1},
                  "cb": {"_target_": "art_diffusion.checkpoints.callbacks.RNGStateCheckpoint"}}, "x")  # an alias
    with pytest.raises(UnsafeConfigError, match="trusted_classes='\\[tests.helpers.crash.CrashAfterEpoch\\]'"):
        check_targets({"cb": {"_target_": "tests.helpers.crash.CrashAfterEpoch"}}, "x")
    vouched = "tests.helpers.crash.CrashAfterEpoch"
    check_targets({"cb": {"_target_": vouched}}, "x", [vouched])


def _script(name: str, *overrides: str) -> subprocess.CompletedProcess:
    return run_script(name, *overrides, cwd=REPO)


def _poison(source: Path, dest: Path, edit) -> Path:
    checkpoint = load_checkpoint(source)
    edit(checkpoint[CONFIG_KEY])
    torch.save(checkpoint, dest)  # plain data: torch.load(weights_only=True) alone accepts it
    return dest


def _tool_cfg(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=["device=cpu", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def test_hostile_checkpoints_run_nothing_in_the_tools(tiny_run, tmp_path, demo_root):
    marker = tmp_path / "pwned"
    best = tiny_run / "checkpoints" / "best.ckpt"
    write_marker = {"_target_": "art_diffusion.storage.atomic_write", "path": str(marker), "data": "pwned"}

    def in_net(config):  # a function the project imports, as the network
        config["model"]["net"] = dict(write_marker)

    def in_list(config):  # hidden in a list inside the network's arguments, the module claiming a generator
        config["model"]["_target_"] = "art_diffusion.lightning.DiffusionModule"
        config["model"]["net"]["extra"] = [{"nested": dict(write_marker)}]

    def in_args(config):  # an _args_ payload to a function the project imports
        config["model"]["net"]["payload"] = {"_target_": "art_diffusion.storage.atomic_write",
                                             "_args_": [str(marker), "pwned"]}

    # every tool, on its composed config (same loader; test_a_hostile_checkpoint_stops_the_script_in_one_message
    # runs one as a user does, in a subprocess)
    for run, edit, overrides in [(reconstruct, in_net, [f"input={demo_root}", f"output_dir={tmp_path / 'r'}"]),
                                 (generate, in_list, [f"output_dir={tmp_path / 'g'}", "num_images=1"]),
                                 (evaluate, in_args, ["lpips.enabled=false", f"output_dir={tmp_path / 'e'}"]),
                                 (evaluate, in_net, ["lpips.enabled=false", f"data.root={demo_root}",
                                                     f"output_dir={tmp_path / 'e'}"])]:
        evil = _poison(best, tmp_path / f"{run.__name__}.ckpt", edit)
        with pytest.raises(UnsafeConfigError, match=f"Refusing the config stored in {evil}: "):
            run(_tool_cfg(run.__name__, f"ckpt_path={evil}", *overrides))
        assert not marker.exists(), f"{run.__name__} ran the payload"


@pytest.mark.slow
def test_a_hostile_checkpoint_stops_the_script_in_one_message(tiny_run, tmp_path, demo_root):
    marker = tmp_path / "pwned"

    def in_net(config):  # a function the project imports, as the network
        config["model"]["net"] = {"_target_": "art_diffusion.storage.atomic_write", "path": str(marker), "data": "x"}

    # as a user runs it: the script, one message, exit 2
    evil = _poison(tiny_run / "checkpoints" / "best.ckpt", tmp_path / "reconstruct.ckpt", in_net)
    result = _script("reconstruct", f"ckpt_path={evil}", "device=cpu", f"input={demo_root}",
                     f"output_dir={tmp_path / 'r'}")
    assert not marker.exists()
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"error: Refusing the config stored in {evil}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_poisoned_last_ckpt_is_refused_by_resume(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    marker = tmp_path / "pwned"

    def in_callbacks(config):  # resume instantiates every callback of the stored config
        config["callbacks"]["evil"] = {"_target_": "art_diffusion.storage.atomic_write", "_args_": [str(marker), "x"]}
        config["callbacks"]["crash"] = {"_target_": "tests.helpers.crash.CrashAfterEpoch", "log_path": str(marker)}
        config["trusted_classes"] = ["tests.helpers.crash.CrashAfterEpoch"]  # never read back from a file

    last = run / "checkpoints" / "last.ckpt"
    _poison(last, last, in_callbacks)
    result = _script("train", f"resume={run}", "trainer.max_epochs=2")
    assert not marker.exists()
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"Refusing the config stored in {last}" in result.stderr and "'callbacks.evil._args_'" in result.stderr

    checkpoint = load_checkpoint(last)
    del checkpoint[CONFIG_KEY]["callbacks"]["evil"]
    torch.save(checkpoint, last)
    cfg = compose_train_cfg(tmp_path / "unused", f"resume={run}", tiny=False)
    refused = "_target_ 'tests.helpers.crash.CrashAfterEpoch'.*'callbacks.crash._target_'"
    with pytest.raises(UnsafeConfigError, match=refused):
        resumed_config(cfg)  # the stored trusted_classes does not vouch for it; only the command line can


def test_hydra_rerun_of_a_pickled_config_is_refused_in_one_line(capsys):
    from art_diffusion.run import cli

    with pytest.raises(SystemExit) as stop:  # it would unpickle .hydra/config.pickle: opening a pickle runs code
        cli.prepare_cli(["--experimental-rerun", "outputs/x/.hydra/config.pickle"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --experimental-rerun is not supported") and "resume=RUN_DIR" in line


def test_a_checkpoint_written_before_classes_moved_still_loads_and_resumes(tiny_run, tmp_path):
    """Stored configs name callbacks and loggers by the paths they had before the layout of 0.1 moved them
    (art_diffusion.callbacks.*, art_diffusion.loggers.*): they load, and resume with the current classes."""
    import shutil

    from art_diffusion.checkpoints import load_module, stored_config
    from art_diffusion.checkpoints.registry import RENAMED

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last = run / "checkpoints" / "last.ckpt"
    old_names = {new: old for old, new in RENAMED.items()}

    def back_to_old_paths(config):
        for group in ("callbacks", "logger"):
            for node in config[group].values():
                if node and node.get("_target_") in old_names:
                    node["_target_"] = old_names[node["_target_"]]

    _poison(last, last, back_to_old_paths)
    stored = load_checkpoint(last)[CONFIG_KEY]
    assert stored["callbacks"]["rng_state"]["_target_"] == "art_diffusion.callbacks.RNGStateCheckpoint"
    assert stored["logger"]["tensorboard"]["_target_"] == "art_diffusion.loggers.TensorBoardLogger"
    config = stored_config(load_checkpoint(last), last)
    assert config["callbacks"]["rng_state"]["_target_"] == "art_diffusion.checkpoints.RNGStateCheckpoint"
    assert config["logger"]["tensorboard"]["_target_"] == "art_diffusion.lightning.TensorBoardLogger"
    module, _ = load_module(last)
    assert module.net is not None
    resumed = resumed_config(compose_train_cfg(tmp_path / "unused", f"resume={run}", tiny=False))
    assert resumed.callbacks.sigterm_checkpoint._target_ == "art_diffusion.checkpoints.CheckpointOnSigterm"


def test_absurd_values_in_a_stored_config_are_refused_in_one_message(tiny_run, tmp_path):
    from art_diffusion import ConfigError
    from art_diffusion.checkpoints import load_module

    best = tiny_run / "checkpoints" / "best.ckpt"

    def absurd(config):
        config["model"]["net"]["base_channels"] = -4

    edited = _poison(best, tmp_path / "edited.ckpt", absurd)
    with pytest.raises(ConfigError, match=f"Refusing the config stored in {edited}: model.net.base_channels=-4 must"):
        load_module(edited)
