"""Weights damaged in content (NaN, inf, a negative BatchNorm variance, an integer tensor for a float parameter, flipped
bytes) are refused by every loader of weights with one message naming the file, the tensor and the fix; never loaded
into a model that then writes NaN metrics or black images (checkpoints/loading.py, pretrained/folder.py)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

import art_diffusion
from art_diffusion import UserError
from art_diffusion.checkpoints import DamagedCheckpointError, load_checkpoint, load_module
from art_diffusion.checkpoints.resume import newest_loadable_checkpoint
from art_diffusion.pretrained.export import export
from art_diffusion.run.train import train
from tests.helpers.scripts import run_script
from tests.test_pretrained import entry_cfg

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*"),
]

WEIGHT, VAR = "enc1.0.weight", "enc1.2.running_var"  # the net's first conv and first BatchNorm


def _nan(state):
    state[WEIGHT][0, 0, 0, 0] = float("nan")


def _inf(state):
    state[WEIGHT][-1, -1, -1, -1] = float("-inf")


def _negative_var(state):
    state[VAR][:] = -1.0


def _integer(state):
    state[WEIGHT] = (state[WEIGHT] * 100).long()


#: damage -> (edit of a state dict keyed as the net's, the tensor the refusal names)
CONTENT = {"nan": (_nan, WEIGHT), "inf": (_inf, WEIGHT), "negative running_var": (_negative_var, VAR),
           "integer dtype": (_integer, WEIGHT)}
KINDS = [*CONTENT, "flipped bytes"]


def _flip_bytes_of(path: Path, tensor: torch.Tensor) -> None:
    """XOR 64 bytes inside ``tensor``'s stored bytes in ``path`` (found by their content), as a disk error would."""
    data = bytearray(path.read_bytes())
    start = data.find(torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage()).numpy().tobytes())
    assert start > 0
    for i in range(start + 16, start + 80):
        data[i] ^= 0x40
    path.write_bytes(bytes(data))


def damaged_checkpoint(good: Path, tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "damaged.ckpt"
    checkpoint = torch.load(good, weights_only=True)
    if kind == "flipped bytes":
        shutil.copy(good, path)
        _flip_bytes_of(path, checkpoint["state_dict"]["net." + WEIGHT])
        return path
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    CONTENT[kind][0](state)
    checkpoint["state_dict"].update({"net." + k: v for k, v in state.items()})
    torch.save(checkpoint, path)
    return path


def damaged_folder(exported: Path, tmp_path: Path, kind: str, sha256: bool) -> Path:
    folder = tmp_path / "folder"
    shutil.copytree(exported, folder)
    weights, config = folder / "model.safetensors", json.loads((folder / "config.json").read_text())
    assert re.fullmatch("[0-9a-f]{64}", config.pop("weights_sha256"))  # export records it
    if not sha256:  # a folder exported before export recorded it
        (folder / "config.json").write_text(json.dumps(config))
    state = load(weights.read_bytes())
    if kind == "flipped bytes":
        _flip_bytes_of(weights, state[WEIGHT])
    elif kind == "integer dtype":  # the header says I32: the same shape and the same bytes
        data = bytearray(weights.read_bytes())
        entry = data.index(f'"{WEIGHT}":{{"dtype":"F32"'.encode())
        dtype = data.index(b'"F32"', entry)
        data[dtype:dtype + 5] = b'"I32"'
        weights.write_bytes(bytes(data))
        assert load(weights.read_bytes())[WEIGHT].dtype == torch.int32
    else:
        CONTENT[kind][0](state)
        weights.write_bytes(save(state))
    return folder


def assert_refused(error: BaseException, path: Path, tensor: str | None) -> None:
    message = str(error)
    assert isinstance(error, UserError) and "\n" not in message, message
    assert str(path) in message and "damaged" in message, message
    if tensor:
        assert re.search(rf"tensor '[\w.]*{re.escape(tensor)}'", message), message


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "reconstructor"
    export(entry_cfg("export", f"ckpt_path={tiny_run}", f"output_dir={out}"))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_checkpoint_is_refused_by_the_tools_naming_file_and_tensor(tiny_run, tmp_path, kind):
    path = damaged_checkpoint(tiny_run / "checkpoints" / "best.ckpt", tmp_path, kind)
    with pytest.raises(DamagedCheckpointError) as refused:  # reconstruct, evaluate, generate, export, load_pretrained
        load_module(path)
    assert_refused(refused.value, path, VAR if kind == "negative running_var" else WEIGHT)


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_checkpoint_is_refused_before_training_from_it(tiny_run, tmp_path, compose_cfg, kind):
    path = damaged_checkpoint(tiny_run / "checkpoints" / "best.ckpt", tmp_path, kind)
    with pytest.raises(DamagedCheckpointError) as refused:  # check_checkpoint_fits: ckpt_path= and resume=
        train(compose_cfg(f"ckpt_path={path}"))
    assert_refused(refused.value, path, VAR if kind == "negative running_var" else WEIGHT)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("kind", ["nan", "negative running_var", "flipped bytes"])
def test_resume_passes_over_a_damaged_last_checkpoint_to_the_newest_good_one(tiny_run, tmp_path, kind, caplog):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(tiny_run / "checkpoints", checkpoints)
    shutil.copy(damaged_checkpoint(checkpoints / "last.ckpt", tmp_path, kind), checkpoints / "last.ckpt")
    with caplog.at_level(logging.WARNING):
        chosen, _ = newest_loadable_checkpoint(tmp_path, [])  # the run dir
    assert chosen == checkpoints / "best.ckpt"
    assert "last.ckpt is unreadable" in caplog.text and "damaged" in caplog.text


@pytest.mark.parametrize("sha256", [True, False], ids=["folder", "folder without weights_sha256"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_exported_folder_is_refused_naming_file_and_tensor(exported, tmp_path, caplog, kind, sha256):
    folder = damaged_folder(exported, tmp_path, kind, sha256)
    if kind == "flipped bytes" and not sha256:  # safetensors has no checksum: it loads, never silently
        with caplog.at_level(logging.WARNING):
            art_diffusion.load_pretrained(folder)
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert str(folder / "model.safetensors") in warning and "not checked against a checksum" in warning
        assert "python scripts/export.py" in warning
        return
    with pytest.raises(UserError) as refused:
        art_diffusion.load_pretrained(folder)
    content = kind in ("nan", "inf", "negative running_var")  # named even where the sha256 differs
    assert_refused(refused.value, folder / "model.safetensors",
                   (VAR if kind == "negative running_var" else WEIGHT) if content or not sha256 else None)
    if sha256 and not content:
        assert "sha256 is not the one" in str(refused.value)


def test_good_weights_load_with_float_casts_and_without_weights_sha256(tiny_run, exported, tmp_path, caplog):
    """No false alarm: the run's checkpoints, a float64 copy of a parameter (a cast load_state_dict makes), an older
    folder without weights_sha256."""
    for path in (tiny_run / "checkpoints").glob("*.ckpt"):
        load_checkpoint(path)
    checkpoint = torch.load(tiny_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["state_dict"]["net." + WEIGHT] = checkpoint["state_dict"]["net." + WEIGHT].double()
    torch.save(checkpoint, tmp_path / "float64.ckpt")
    module, _ = load_module(tmp_path / "float64.ckpt")
    assert module.net.enc1[0].weight.dtype == torch.float32
    folder = tmp_path / "older"
    shutil.copytree(exported, folder)
    config = json.loads((folder / "config.json").read_text())
    with caplog.at_level(logging.WARNING):
        art_diffusion.load_pretrained(exported)
    assert "not checked against a checksum" not in caplog.text  # a folder with its sha256 loads without a word
    del config["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        art_diffusion.load_pretrained(folder)
    assert "records no weights_sha256, so these weights are not checked against a checksum" in caplog.text
    config["weights_sha256"] = "not a digest"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="weights_sha256='not a digest' is not a sha256"):
        art_diffusion.load_pretrained(folder)


@pytest.mark.slow  # runs the script end to end (in-process: run_script)
def test_reconstruct_script_refuses_a_damaged_checkpoint_in_one_line(tiny_run, tmp_path):
    path = damaged_checkpoint(tiny_run / "checkpoints" / "best.ckpt", tmp_path, "nan")
    done = run_script("reconstruct", f"ckpt_path={path}", f"input={tmp_path}", f"output_dir={tmp_path / 'out'}",
                      cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{path}: tensor 'state_dict.net.{WEIGHT}' holds 1 NaN" in errors[0]
    assert not (tmp_path / "out").exists()


def test_damaged_vgg_weights_are_rebuilt_in_the_cache_and_refused_from_a_path(tmp_path, monkeypatch):
    from art_diffusion.nets.vgg import load_vgg16_state, sources, weights

    with pytest.warns(UserWarning, match="RANDOM"):
        good = load_vgg16_state("random", 16)
    damaged = {k: v.clone() for k, v in good.items()}
    damaged["0.weight"][0, 0, 0, 0] = float("nan")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(cache))
    torch.save(damaged, cache / "vgg16_imagenet_features16.pt")
    monkeypatch.setattr(sources, "from_hub_cache", lambda: good)
    state = weights.imagenet_vgg16_state(16)  # the damaged cache is rebuilt from a source
    assert torch.equal(state["0.weight"], good["0.weight"])
    assert torch.isfinite(torch.load(cache / "vgg16_imagenet_features16.pt", weights_only=True)["0.weight"]).all()

    torch.save(damaged, tmp_path / "vgg16.pth")
    with pytest.raises(DamagedCheckpointError) as refused:
        load_vgg16_state(str(tmp_path / "vgg16.pth"), 16)
    assert_refused(refused.value, tmp_path / "vgg16.pth", "0.weight")


def _flip_low_bits(path: Path, tensor: torch.Tensor) -> None:
    """The lowest bit of three float32 values of ``tensor`` flipped in ``path``: damage that stays finite, so only a
    checksum can see it (a NaN check cannot)."""
    data = bytearray(path.read_bytes())
    start = data.find(torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage()).numpy().tobytes())
    assert start > 0
    for i in (0, 4, 8):
        data[start + i] ^= 0x01
    path.write_bytes(bytes(data))


def test_vgg_weights_with_bits_flipped_that_stay_finite_are_never_used(tmp_path, monkeypatch, caplog):
    """Every place torch files are read checks their zip's CRC-32s (storage.load_torch): the weight cache is rebuilt,
    a file given by path refused naming it, torch.hub's file checked against the sha256 digits its name carries."""
    from art_diffusion import storage
    from art_diffusion.nets.vgg import load_vgg16_state, sources, weights

    with pytest.warns(UserWarning, match="RANDOM"):
        good = load_vgg16_state("random", 16)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(cache))
    cached = cache / "vgg16_imagenet_features16.pt"
    storage.save_torch(good, cached)
    _flip_low_bits(cached, good["0.weight"])
    flipped = torch.load(cached, weights_only=True)["0.weight"]  # what a reader without the check would use
    assert torch.isfinite(flipped).all() and not torch.equal(flipped, good["0.weight"])
    with pytest.raises(storage.DamagedFileError, match="fails the CRC-32 checksum"):
        storage.load_torch(cached)

    monkeypatch.setattr(sources, "from_hub_cache", lambda: good)
    with caplog.at_level(logging.WARNING):
        state = weights.imagenet_vgg16_state(16)  # the damaged cache is rebuilt from a source
    assert torch.equal(state["0.weight"], good["0.weight"])
    assert f"Ignoring unreadable VGG16 weight cache {cached}" in caplog.text and "CRC-32" in caplog.text
    assert torch.equal(storage.load_torch(cached)["0.weight"], good["0.weight"])

    given = tmp_path / "vgg16.pth"
    storage.save_torch(good, given)
    _flip_low_bits(given, good["0.weight"])
    with pytest.raises(UserError, match="CRC-32") as refused:
        load_vgg16_state(str(given), 16)
    assert str(given) in str(refused.value)

    monkeypatch.undo()
    hub = tmp_path / "hub" / sources.HUB_FILENAME
    hub.parent.mkdir()
    storage.save_torch({f"features.{k}": v for k, v in good.items()}, hub)  # readable, but not torch.hub's bytes
    monkeypatch.setattr(sources, "hub_checkpoint_path", lambda: hub)
    with pytest.raises(ValueError, match=f"its sha256 does not begin with {sources.HUB_SHA256_PREFIX}"):
        sources.from_hub_cache()
