"""A stored config is data for the constructors of the classes it names, and nothing else: every ``_target_`` node of
every composed config, edited the ways a file can be (a key the class does not take, a value of another type, a
copy of a checked key given its own value, nesting, another shape), is refused with one message naming the key
path; what says how a process runs (torch.compile and its options) is never taken from a file."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from omegaconf import OmegaConf

from art_diffusion import ConfigError
from art_diffusion.checkpoints import CONFIG_KEY, UnsafeConfigError, load_module, stored_config
from art_diffusion.checkpoints.arguments import argument_problems
from art_diffusion.run.validate import CHOICES, COPIES, Range, check_stored_values, check_values
from tests.helpers.config import CONF_DIR, compose_train_cfg

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*")
ORIGIN = "the config stored in x.ckpt"
ENTRY_CONFIGS = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def stored_configs(tmp_path_factory) -> list[dict]:
    """Resolved run configs as train.py stores them (precision resolved), for each model and network."""
    out = tmp_path_factory.mktemp("stored")
    configs = []
    for i, overrides in enumerate([("callbacks/early_stopping=default",), ("model=ddpm", "model.num_classes=3"),
                                   ("model=ddpm", "model/net=conv_denoiser"),
                                   ("model=ddpm", "model/net=diffusers_unet")]):
        cfg = compose_train_cfg(out / str(i), *overrides, "trainer.precision=32-true")
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain.pop("hydra")
        configs.append(plain)
    return configs


def _target_nodes(node, at=""):
    if isinstance(node, dict):
        if "_target_" in node:
            yield at, node
        for key, value in node.items():
            yield from _target_nodes(value, f"{at}.{key}" if at else key)


def _refused(config: dict, named: str) -> None:
    """Refused naming ``named`` when a tool reads the file, or else when a resume checks the whole run config."""
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_stored_values(config, ORIGIN)
        check_values(OmegaConf.create(config), "train")


def test_the_configs_as_stored_pass(stored_configs):
    for config in stored_configs:
        check_stored_values(config, ORIGIN)


def test_every_class_refuses_a_key_it_does_not_take(stored_configs):
    for config in stored_configs:
        for at, _ in list(_target_nodes(config)):
            edited = copy.deepcopy(config)
            OmegaConf.update(OmegaConf.create(edited), at, {}, merge=True)  # the path exists
            node = edited
            for part in at.split("."):
                node = node[part]
            node["surplus"] = 1
            if at.startswith("logger."):  # a logger hands **kwargs to SummaryWriter: not key-checked
                continue
            _refused(edited, f"{at}.surplus")


@pytest.mark.slow  # ~150 edited configs, each checked whole (0.1 s each)
def test_every_typed_value_refuses_another_type(stored_configs):
    """Each bool, int, str and list argument of every class, given a string, a float or a scalar: refused by name."""
    checked = 0
    for config in stored_configs:
        for at, node in list(_target_nodes(config)):
            for key, value in node.items():
                if key.startswith("_") or value is None or isinstance(value, dict):
                    continue
                wrong = str(value) if isinstance(value, bool) else value + 0.5 if isinstance(value, int) else \
                    3 if isinstance(value, str) else 8 if isinstance(value, list) else "abc"
                edited = copy.deepcopy(config)
                target = edited
                for part in at.split("."):
                    target = target[part]
                target[key] = wrong
                alone = argument_problems({"n": {"_target_": node["_target_"], key: wrong}})
                if not any(p.startswith(f"n.{key}") for p in alone):
                    continue  # the class declares no type for it (a str path, an untyped argument)
                checked += 1
                _refused(edited, f"{at}.{key}")
    assert checked > 60, checked


@pytest.mark.parametrize(("key", "value", "named"), [
    ("model.optimizer.lr", -1.0, "model.optimizer.lr=-1.0"),
    ("model.loss.perceptual_weight", "abc", "model.loss.perceptual_weight='abc'"),
    ("model.scheduler.gamma", float("nan"), "model.scheduler.gamma=nan"),
    ("model.net.fused", "False", "model.net.fused='False'"),
])
def test_a_copy_of_a_checked_key_is_checked_like_the_original(stored_configs, key, value, named):
    edited = OmegaConf.create(copy.deepcopy(stored_configs[0]))
    OmegaConf.update(edited, key, value, merge=False)
    _refused(OmegaConf.to_container(edited), named)


def test_a_generated_image_size_the_net_was_not_built_for_is_refused(stored_configs):
    edited = copy.deepcopy(stored_configs[1])
    edited["model"]["net"]["image_size"] = 2 * edited["model"]["image_size"]
    _refused(edited, "model.net.image_size")


@pytest.mark.parametrize("edit", ["list", "missing", "no image size"])
def test_a_stored_config_of_another_shape_is_refused(stored_configs, edit):
    edited = copy.deepcopy(stored_configs[0])
    if edit == "list":
        edited["data"] = [1, 2]
    elif edit == "missing":
        del edited["data"]
    else:
        del edited["data"]["image_size"]
    _refused(edited, "data")


def test_a_config_nested_deeper_than_any_of_ours_is_refused_without_recursing(tmp_path, stored_configs):
    deep: dict = {}
    node = deep
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(UnsafeConfigError, match="nests more than"):
        stored_config({CONFIG_KEY: {**stored_configs[0], "extras": deep}}, tmp_path / "x.ckpt")


def test_every_integer_rule_has_an_upper_bound():
    with pytest.raises(ValueError, match="finite upper bound"):
        Range(1, integer=True)


def test_every_copy_the_configs_make_is_listed():
    """COPIES is the list of every ``key: ${other}`` under conf/ (a new one must be reviewed there)."""
    found = {}
    for path in CONF_DIR.rglob("*.yaml"):
        if path.parts[len(CONF_DIR.parts)] == "hydra":
            continue
        text = path.read_text()
        package = re.search(r"^# @package (\S+)", text, re.M)
        prefix = "" if package and package.group(1) == "_global_" else \
            ".".join(path.relative_to(CONF_DIR).parts[:-1])
        for key, value in _leaves(OmegaConf.to_container(OmegaConf.load(path), resolve=False)):
            whole = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", str(value))
            dotted = f"{prefix}.{key}" if prefix else key
            # places a run writes are recomputed on resume, never read from a file (checkpoints/resume.py)
            if whole and not dotted.startswith(("hydra.", "defaults")) and not whole.group(1).startswith(
                    ("paths.", "output_dir")):
                found[dotted] = whole.group(1)
    assert found == COPIES


def _leaves(node, at=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{at}.{key}" if at else str(key))
    else:
        yield at, node


@pytest.mark.parametrize("name", ENTRY_CONFIGS)
def test_every_boolean_setting_takes_only_true_or_false(name):
    """A bool of an entry config is a choice of (true, false) there, or an argument of a class (typed by its
    signature): the string "no" never reads as true."""
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"), resolve=False)
    tool = name if name in CHOICES else "train"
    bools = [key for key, value in _leaves(config) if isinstance(value, bool) and not key.startswith("hydra.")]
    unchecked = [key for key in bools if key not in CHOICES[tool]]
    assert unchecked == [], f"{name}.yaml: booleans without a (True, False) choice: {unchecked}"


def test_a_checkpoint_never_chooses_what_torch_compile_runs(tiny_run, tmp_path):
    """Inductor's options can name a compiler to run: a tool builds the model without the file's compile settings."""
    path = tmp_path / "compile.ckpt"
    checkpoint = torch.load(tiny_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint[CONFIG_KEY]["model"].update(compile=True, compile_options={"options": {"cpp.cxx": "/bin/false"}})
    torch.save(checkpoint, path)
    module, _ = load_module(path)
    assert module.compile_options is None


def test_resume_takes_torch_compile_from_the_command_not_the_file():
    from art_diffusion.checkpoints.resume import RESUME_OVERRIDABLE

    assert {"model.compile", "model.compile_options"} <= set(RESUME_OVERRIDABLE)


def test_choices_compare_types():
    """A string or a number where true/false goes is refused, though "False" is truthy and 0 == False."""
    for value in ("False", "True", 0, 1):
        assert _choice_problem("model.net.fused", value), value


def _choice_problem(key: str, value) -> list[str]:
    try:
        check_stored_values({"model": {"net": {"fused": value}}, "data": {"image_size": 32}}, ORIGIN, whole=False)
    except ConfigError as error:
        return [str(error)] if key in str(error) else []
    return []


def test_sizes_each_in_range_that_multiply_into_an_impossible_network_are_refused(stored_configs, tmp_path):
    """base_channels, channel_mults and num_res_blocks each within their ranges, together ~1e14 parameters: counted on
    the meta device (nothing allocated) and refused, from a file and from the command line."""
    from art_diffusion.run.train import prepare_config

    edited = copy.deepcopy(stored_configs[1])
    edited["model"]["net"].update(base_channels=4096, channel_mults=[16] * 8, num_res_blocks=64)
    edited["data"]["image_size"] = edited["model"]["image_size"] = edited["model"]["net"]["image_size"] = 256
    _refused(edited, "parameters")
    with pytest.raises(ConfigError, match="parameters"):
        prepare_config(compose_train_cfg(tmp_path, "model=ddpm", "model.net.base_channels=4096",
                                         "model.net.channel_mults=[16,16,16,16,16,16,16,16]",
                                         "model.net.num_res_blocks=64", "data.image_size=256"))
