"""Errors a user can act on, found by an adversarial tester, end a command with one ``error:`` line naming the key
(and the fix), exit status 2, no traceback: a constructor of a config-built object (Lightning's Trainer, a callback)
refusing its arguments."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from art_diffusion import ConfigError
from art_diffusion.run.cli import user_errors
from art_diffusion.run.train import prepare_config
from art_diffusion.run.validate import built
from tests.helpers.config import CONF_DIR, compose_train_cfg


def _one_error_line(capsys, task) -> str:
    with pytest.raises(SystemExit) as stop:
        user_errors(task)()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]  # Lightning may log info lines
    assert "Traceback" not in err
    return line


@pytest.mark.parametrize(("override", "key", "words"), [
    ("trainer.gradient_clip_algorithm=foo", "trainer", "gradient_clip_algorithm"),
    ("trainer.accelerator=foo", "trainer", "accelerator"),
    ("trainer.devices=abc", "trainer", "devices"),
    ("callbacks.best_checkpoint.mode=foo", "callbacks.best_checkpoint", "mode"),
])
def test_a_constructor_refusing_its_config_arguments_is_one_error_line_naming_the_node(
        override, key, words, tmp_path, capsys):
    cfg = prepare_config(compose_train_cfg(tmp_path / "run", override))  # what train() builds from
    line = _one_error_line(capsys, lambda: built(key, OmegaConf.select(cfg, key)))
    assert f"under {key} " in line and words in line


def test_an_error_of_our_own_class_keeps_its_traceback():
    """A ValueError from one of art_diffusion's classes is a bug (or a rule missing from validate.py): not a
    ConfigError. A Lightning constructor's ValueError is the config's."""
    ours = OmegaConf.create({"_target_": "art_diffusion.diffusion.schedule.NoiseSchedule", "timesteps": 1})
    with pytest.raises(Exception) as raised:
        built("model.schedule", ours)
    assert not isinstance(raised.value, ConfigError)
    theirs = OmegaConf.create({"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "every_n_epochs": -1})
    with pytest.raises(ConfigError, match=r"under callbacks\.x .*every_n_epochs"):
        built("callbacks.x", theirs)


@pytest.mark.parametrize(("tool", "overrides", "start", "fix"), [
    ("train", ["data.bacth_size=8"], "data.bacth_size: ", "did you mean data.batch_size?"),
    ("train", ["model=foo"], "model=foo: ", "use one of its options (ddpm, reconstructor.)"),
    ("train", ["model/net=unet2"], "model/net=unet2: ", "did you mean model/net=unet?"),
    ("train", ["trainer.fast_dev_run=-1"], "trainer.fast_dev_run: ", "+trainer.fast_dev_run=VALUE"),
    ("generate", ["ckpt_path=x", "num_image=3"], "num_image: ", "did you mean num_images?"),
    ("train", ["data=[1"], "cannot read the override 'data=[1'", "override_grammar"),
])
def test_a_config_hydra_cannot_compose_is_one_line_with_the_closest_key_or_option(tool, overrides, start, fix):
    """The message scripts print (cli.composition_error) for the error Hydra's own composition raises."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from art_diffusion.run.cli import composition_error
    from tests.helpers.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), pytest.raises(Exception) as raised:
        compose(tool, overrides=overrides)
    GlobalHydra.instance().clear()
    message = composition_error(raised.value)
    assert message.startswith(start) and fix in message and "\n" not in message
    assert composition_error(ValueError("a bug")) is None


@pytest.mark.parametrize(("key", "below", "problem"), [
    ("callbacks.reconstructions.dirpath", "", "is a file, not a directory"),
    ("data.report_dir", "/sub", "is a file, not a directory"),
    ("logger.tensorboard.save_dir", "", "is a file, not a directory"),
])
def test_a_folder_the_run_writes_to_with_a_file_in_its_way_is_refused_before_work(
        key, below, problem, tmp_path, capsys):
    """Before: a FileExistsError traceback after the first epoch (callbacks.reconstructions.dirpath), one in
    data/report.py (data.report_dir)."""
    from art_diffusion.run.validate import check_values

    afile = tmp_path / "afile"
    afile.write_text("mine")
    cfg = compose_train_cfg(tmp_path / "run", f"{key}={afile}{below}", "logger=tensorboard")
    line = _one_error_line(capsys, lambda: check_values(cfg, "train"))
    assert line.startswith(f"error: Invalid config value: {key}='{afile}{below}'") and problem in line
    assert f"pass {key}=DIR" in line and afile.read_text() == "mine"
    check_values(compose_train_cfg(tmp_path / "run", f"{key}={tmp_path / 'new' / 'dir'}", "logger=tensorboard"),
                 "train")  # a folder that does not exist yet is made


@pytest.mark.parametrize("tool", ["generate", "reconstruct", "evaluate", "export"])
def test_every_tool_with_an_output_dir_makes_it_before_hydra_does(tool):
    """WritableRunDir turns an output_dir that cannot be made (a file in its place) into one error: line."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.helpers.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(tool, overrides=["ckpt_path=x", "output_dir=y"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.callbacks.writable_run_dir._target_ == "art_diffusion.run.cli.WritableRunDir"


@pytest.mark.slow  # starts processes
def test_the_scripts_stop_with_one_error_line_and_exit_2_as_a_user_sees_it(tmp_path, demo_root):
    """As a user runs them: a Trainer refusing a value, a value refused under a debug config, an empty output_dir.
    Exit 2, one error: line on stderr, no traceback; those refused before the run starts leave no run dir, and no
    default run dir, behind. The same commands run in the test's process (``run_script``, which most script tests
    use) end the same way: the same exit status, the same error line, the same nothing left behind."""
    import subprocess
    import sys

    from tests.helpers.config import REPO
    from tests.helpers.scripts import run_script, script_env, tiny

    commands = {  # one of each way out: the rest of these classes are tested in-process above
        "trainer": ("train", *tiny(demo_root), "hydra.run.dir=trainer", "trainer.gradient_clip_algorithm=foo"),
        # the default run dir resolved, then replaced by the debug config's and hydra.run.dir=: removed at exit
        "data.batch_size=0": ("train", *tiny(demo_root), "hydra.run.dir=run", "debug=fdr", "data.batch_size=0"),
        "output_dir=''": ("generate", "ckpt_path=x", "output_dir="),
    }
    lines = {}
    for way in ("process", "in-process"):
        cwd = tmp_path / way
        cwd.mkdir()
        for named, (script, *args) in commands.items():
            if way == "process":
                result = subprocess.run([sys.executable, str(REPO / "scripts" / f"{script}.py"), *args], cwd=cwd,
                                        env=script_env(), capture_output=True, text=True, timeout=300)
            else:
                result = run_script(script, *args, cwd=cwd)
            assert result.returncode == 2, (way, named, result.stderr[-2000:])
            (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert named in line and "Traceback" not in result.stderr, result.stderr[-2000:]
            lines.setdefault(named, set()).add(line.replace(str(cwd), "CWD"))
        assert not (cwd / "run").exists()
        assert not (cwd / "generate.log").exists()  # output_dir='' never means the working directory
        assert not (cwd / "outputs").exists()  # nor a default run dir resolved, then replaced by hydra.run.dir=
    assert all(len(seen) == 1 for seen in lines.values()), lines


@pytest.mark.parametrize(("real", "what"), [("afile", "is a file, not a folder"), ("", "is empty"),
                                            ("nowhere", "does not exist")])
def test_fd_vgg_names_the_folder_key_that_is_not_a_folder(tmp_path, real, what):
    from art_diffusion import MissingPathError
    from art_diffusion.tools.fd_vgg import fd_vgg

    (tmp_path / "afile").write_text("mine")
    cfg = OmegaConf.load(CONF_DIR / "fd_vgg.yaml")
    cfg.real_dir, cfg.fake_dir = str(tmp_path / real) if real else "", str(tmp_path)
    with pytest.raises(MissingPathError, match=f"real_dir=.* {what}"):
        fd_vgg(cfg)
