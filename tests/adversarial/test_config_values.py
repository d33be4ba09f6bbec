"""Property-based: any value, for any numeric key of any script's config, is either accepted as a finite number
inside its range or refused by one ConfigError that names the key; nothing else (no other exception, no inf or NaN
let through). The same for a checkpoint's stored config (what resume= and the tools read)."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf, open_dict

from art_diffusion import ConfigError
from art_diffusion.run.validate import TOOL_RULES, check_stored_values, check_values
from tests.helpers.config import compose_train_cfg

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*")

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e400, -1e400, 1e308, 2**63, -(2**63), 10**30, 0, -1, 1]),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
    st.none(),
    # "${..." is an interpolation OmegaConf parses on assignment: Hydra's override parser refuses a broken one on the
    # command line, and the class registry any "${" in a stored config (test_registry.py)
    st.text(max_size=6).filter(lambda text: "${" not in text),
    st.sampled_from(["inf", "nan", "1e400", "-0", "0x10", "1_000", " 1", "one"]),
)
TOOL_KEYS = [(tool, key) for tool, rules in TOOL_RULES.items() if tool != "train" for key in rules]


@pytest.fixture(scope="module")
def train_configs(tmp_path_factory) -> list[DictConfig]:
    """The composed train configs every TRAIN_RULES key lives in (reconstructor, unconditional and conditional
    DDPM with the generation scores on)."""
    out = tmp_path_factory.mktemp("cfg")
    configs = [compose_train_cfg(out / "a", "callbacks/early_stopping=default"),
               compose_train_cfg(out / "b", "model=ddpm", "model.num_classes=3", "model/net=unet",
                                 "callbacks.generation_scores.every_n_epochs=1", "loss.min_snr_gamma=5"),
               compose_train_cfg(out / "c", "model=ddpm", "model/net=conv_denoiser")]
    missing = [key for key in TOOL_RULES["train"] if all(OmegaConf.select(c, key, default="?") == "?"
                                                           for c in configs)]
    assert missing == [], f"keys no test config has: {missing}"
    return configs


def _with(cfg: DictConfig, key: str, value) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def _accepted_or_named(check, key: str, value, rule) -> None:
    try:
        check()
    except ConfigError as error:
        assert key in str(error), f"{key}={value!r} refused without naming it: {error}"
        return
    allowed, _ = rule
    assert allowed.admits(value), f"{key}={value!r} accepted outside {allowed.describe()}"
    assert value is None or math.isfinite(value), f"{key}={value!r}: a non-finite number got through"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=VALUES)
def test_every_train_key_takes_only_finite_values_in_range(train_configs, data, value):
    key = data.draw(st.sampled_from(list(TOOL_RULES["train"])), label="key")
    if key == "data.image_size" or key.startswith("model.net.image_size"):
        return  # checked through its relations too (multiples): covered by test_config_validation
    base = next(c for c in train_configs if OmegaConf.select(c, key, default="?") != "?")
    cfg = _with(base, key, value)
    _accepted_or_named(lambda: check_values(cfg, "train"), key, value, TOOL_RULES["train"][key])


@settings(max_examples=300, deadline=None)
@given(pair=st.sampled_from(TOOL_KEYS), value=VALUES)
def test_every_tool_key_takes_only_finite_values_in_range(pair, value):
    tool, key = pair
    cfg = _with(OmegaConf.create({}), key, value)
    _accepted_or_named(lambda: check_values(cfg, tool), key, value, TOOL_RULES[tool][key])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=VALUES)
def test_a_stored_config_with_any_value_is_loaded_only_in_range(train_configs, data, value):
    stored_keys = [k for k in TOOL_RULES["train"] if k.startswith(("model.", "loss.")) and "image_size" not in k]
    stored_keys.append("data.image_size")
    key = data.draw(st.sampled_from(stored_keys), label="key")
    base = next(c for c in train_configs if OmegaConf.select(c, key, default="?") != "?")
    stored = OmegaConf.to_container(_with(base, key, value), resolve=True)
    stored.pop("hydra", None)
    _accepted_or_named(lambda: check_stored_values(stored, "the config stored in x.ckpt"), key, value,
                       TOOL_RULES["train"][key])
