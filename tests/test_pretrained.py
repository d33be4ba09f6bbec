"""art_diffusion.load_pretrained and scripts/export.py: the same pixels as reconstruct.py and generate.py, from a run
dir, a checkpoint or an exported folder; the folder read without torch.load; a tampered config.json refused; ONNX."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

import art_diffusion
from art_diffusion import UserError
from art_diffusion.pretrained import PretrainedGenerator, PretrainedReconstructor
from art_diffusion.pretrained.export import export
from art_diffusion.tools.generate import generate
from art_diffusion.tools.reconstruct import reconstruct
from tests.helpers.config import CONF_DIR, REPO
from tests.helpers.scripts import run_script
from tests.test_generate import generate_cfg

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*"),
]


def entry_cfg(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def pixels(image) -> np.ndarray:
    return np.asarray(Image.open(image) if isinstance(image, Path) else image).astype(int)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """An odd-sized PNG and a grayscale JPEG (the sizes reconstruct.py's tests use)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (131, 97, 3), dtype=np.uint8)).save(root / "odd.png")
    Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8)).save(root / "gray.jpg")
    return root


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported as a folder (in-process, as scripts/export.py runs it)."""
    out = tmp_path_factory.mktemp("exported") / "reconstructor"
    export(entry_cfg("export", f"ckpt_path={tiny_run}", f"output_dir={out}"))
    return out


@pytest.mark.parametrize("size", ["native", "train"])
def test_reconstruct_equals_reconstruct_script(tiny_run, inputs, tmp_path, size):
    out = tmp_path / "recon"
    reconstruct(entry_cfg("reconstruct", f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}", f"input={inputs}",
                          f"output_dir={out}", f"size={size}", "side_by_side=false", "device=cpu"))
    model = art_diffusion.load_pretrained(tiny_run)  # a run dir: its checkpoints/best.ckpt
    assert isinstance(model, PretrainedReconstructor) and model.device == torch.device("cpu")
    names = ["odd", "gray"]
    images = model.reconstruct([Image.open(inputs / "odd.png"), Image.open(inputs / "gray.jpg")], size=size)
    by_path = model.reconstruct([inputs / "odd.png", str(inputs / "gray.jpg")], size=size, batch_size=1)
    for name, image, from_path in zip(names, images, by_path):
        expected = pixels(out / "reconstructions" / f"{name}.png")
        assert np.array_equal(pixels(image), expected)  # pixel-exact, PIL images in or paths in
        assert np.array_equal(pixels(from_path), expected)
    sizes = [image.size for image in images]
    assert sizes == ([(97, 131), (56, 40)] if size == "native" else [(32, 32), (32, 32)])
    assert model.reconstruct(Image.open(inputs / "odd.png")).size == (97, 131)  # one image in, one out


def test_a_tensor_batch_is_reconstructed_at_its_own_size(tiny_run):
    model = art_diffusion.load_pretrained(tiny_run / "checkpoints" / "best.ckpt")
    batch = torch.rand(3, 3, 45, 61, generator=torch.Generator().manual_seed(0))
    out = model.reconstruct(batch, batch_size=2)
    assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[2:], model.reconstruct(batch[2:]))  # batches are independent
    with pytest.raises(ValueError, match="NCHW float"):
        model.reconstruct(torch.zeros(3, 45, 61))


def test_exported_folder_loads_back_without_torch_load(tiny_run, exported, inputs, monkeypatch):
    assert sorted(p.name for p in exported.iterdir()) == [".art-diffusion-outputs.json", "README.md", "config.json",
                                                          "model.safetensors", "reconstructions.png"]
    config = json.loads((exported / "config.json").read_text())
    assert config["net"] == {"_target_": "art_diffusion.nets.ConvDiffusionModel", "in_channels": 3,
                             "base_channels": 4, "fused": True}
    assert (config["image_size"], config["art_diffusion_version"], config["task"]) == (32, "0.1.0", "reconstruct")
    assert len(config["class_names"]) == 7  # the demo's class folders
    from_checkpoint = art_diffusion.load_pretrained(tiny_run)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called while loading an exported folder")

    monkeypatch.setattr(torch, "load", refuse)
    model = art_diffusion.load_pretrained(exported)
    monkeypatch.undo()
    image = Image.open(inputs / "odd.png")
    assert np.array_equal(pixels(model.reconstruct(image)), pixels(from_checkpoint.reconstruct(image)))
    card = (exported / "README.md").read_text()
    for text in ("## Training data", "brush_strokes 4", "## Final metrics", "test/psnr", "## Training config",
                 "base_channels: 4", "licences of its images were not checked", "Kaggle", "load_pretrained",
                 "![reconstructions](reconstructions.png)"):
        assert text in card, text
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert f"| test/psnr | {metrics['test/psnr']:.6g} |" in card


def _tamper(exported: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "tampered"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(exported, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


TAMPERED = {
    "a class outside the registry": (lambda c: c["net"].update(_target_="torch.nn.Linear"), "outside the registry"),
    "a function": (lambda c: c["net"].update(_target_="os.system"), "not a class"),
    "a module never imported": (lambda c: c["net"].update(_target_="evil_pkg.Net"), "names no class"),
    "a registry class that is no net": (lambda c: c["net"].update(_target_="lightning.pytorch.Trainer"),
                                        "not a network of a reconstruct model"),
    "a DDPM's net for a reconstructor": (lambda c: c["net"].update(_target_="art_diffusion.nets.UNet"),
                                         "not a network of a reconstruct model"),
    "an unknown key": (lambda c: c.update(weights_file="model.safetensors"), r"unknown keys \['weights_file'\]"),
    "an unknown constructor argument": (lambda c: c["net"].update(activation="relu"),
                                        r"net.activation: ConvDiffusionModel takes no argument 'activation'"),
    "an argument of another type": (lambda c: c["net"].update(fused="False"), r"net.fused='False' is not a bool"),
    "a format version of another type": (lambda c: c.update(format_version=True), "format="),
    "a Hydra key": (lambda c: c["net"].update(_args_=["x"]), "Hydra key|arguments"),
    "a path in the class names": (lambda c: c.update(class_names=["../../etc/passwd"]), "class_names.*like a path"),
    "a Windows path": (lambda c: c["net"].update(base_channels="..\\weights.bin"), "looks like a path"),
    "a missing key": (lambda c: c.pop("normalisation"), r"missing keys \['normalisation'\]"),
    "another format version": (lambda c: c.update(format_version=2), "version 2"),
    "a value training refuses": (lambda c: c["net"].update(base_channels=0), "base_channels=0 must be"),
    "weights of another net": (lambda c: c["net"].update(base_channels=8), "does not fit"),
    "another normalisation": (lambda c: c.update(normalisation={"input_range": [-1, 1]}), "normalisation"),
    "not an object": (lambda c: c.clear() or c.update(task=["reconstruct"]), "task="),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_config_json_is_refused_in_one_message(exported, tmp_path, case):
    edit, message = TAMPERED[case]
    folder = _tamper(exported, tmp_path, edit)
    with pytest.raises(UserError, match=message) as refused:
        art_diffusion.load_pretrained(folder)
    assert str(folder) in str(refused.value) and "\n" not in str(refused.value)
    assert "evil_pkg" not in sys.modules


def test_a_broken_folder_says_what_is_wrong(exported, tmp_path):
    folder = _tamper(exported, tmp_path, lambda c: None)
    (folder / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="truncated or not safetensors"):
        art_diffusion.load_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="Cannot read"):
        art_diffusion.load_pretrained(folder)
    (folder / "config.json").write_text(exported.joinpath("config.json").read_text().replace('"base_channels": 4',
                                                                                            '"base_channels": NaN'))
    with pytest.raises(UserError, match="NaN is not a number of strict JSON"):
        art_diffusion.load_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="neither an exported folder"):
        art_diffusion.load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        art_diffusion.load_pretrained(tmp_path / "missing")


@pytest.mark.slow  # trains its own tiny DDPM (conftest.py's fixture, once per session)
def test_ddpm_generate_equals_generate_script_from_checkpoint_and_folder(ddpm_checkpoint, tmp_path):
    settings = {"num_images": 3, "class_name": "geometric", "steps": 3, "seed": 1, "batch_size": 2}
    generate(generate_cfg(f"ckpt_path={ddpm_checkpoint}", f"output_dir={tmp_path / 'gen'}",
                          *[f"{key}={value}" for key, value in settings.items()]))
    expected = [pixels(p) for p in sorted((tmp_path / "gen" / "images").glob("*.png"))]
    folder = tmp_path / "ddpm"
    export(entry_cfg("export", f"ckpt_path={ddpm_checkpoint}", f"output_dir={folder}", "card_samples=4"))
    assert Image.open(folder / "samples.png").size == (2 * 34 + 2, 2 * 34 + 2)
    config = json.loads((folder / "config.json").read_text())
    assert config["weights"] == "ema" and config["diffusion"]["num_classes"] == 7
    for model in (art_diffusion.load_pretrained(ddpm_checkpoint), art_diffusion.load_pretrained(folder)):
        assert isinstance(model, PretrainedGenerator) and "geometric" in model.class_names
        images = model.generate(**settings)
        assert len(images) == 3 and all(np.array_equal(pixels(a), b) for a, b in zip(images, expected))
    with pytest.raises(ValueError, match="knows"):
        model.generate(1, class_name="portraits")
    with pytest.raises(ValueError, match="reconstructor only"):
        export(entry_cfg("export", f"ckpt_path={ddpm_checkpoint}", f"output_dir={tmp_path / 'x'}", "format=onnx"))


#: Values a caller may pass by mistake: what the scripts' rules say of each is what the Python API must say
HOSTILE = [float("nan"), float("inf"), -1, 0, True, 10**12, "3", 2.5, None, "bogus"]


def _script_refuses(tool: str, argument: str, value) -> bool:
    from omegaconf import OmegaConf

    from art_diffusion.run.validate import _problems

    return bool(_problems(OmegaConf.create({argument: value}), tool))


@pytest.mark.parametrize("argument", ["num_images", "batch_size", "steps", "seed", "guidance_scale", "eta", "sampler",
                                      "progress"])
def test_generate_takes_exactly_the_values_generate_py_takes(compose_cfg, argument):
    """The class: every argument, against the command line's own rule for it, not a list of cases."""
    from hydra.utils import instantiate

    model = PretrainedGenerator(instantiate(compose_cfg("model=ddpm", "model.schedule.timesteps=4",
                                                        "model.image_size=8").model))
    for value in HOSTILE:
        call = {"num_images": 1, "steps": 1, "batch_size": 1, argument: value}
        if _script_refuses("generate", argument, value):
            with pytest.raises(ValueError, match=argument):
                model.generate(**call)
        elif not (argument == "num_images" and isinstance(value, int) and value > 4):
            assert len(model.generate(**call)) == call["num_images"], (argument, value)


@pytest.mark.parametrize("argument", ["batch_size", "size", "pad_mode"])
def test_reconstruct_takes_exactly_the_values_reconstruct_py_takes(tiny_run, argument):
    model = art_diffusion.load_pretrained(tiny_run / "checkpoints" / "best.ckpt")
    image = Image.new("RGB", (20, 12), "red")
    for value in HOSTILE + ["train", "native", "replicate"]:
        if _script_refuses("reconstruct", argument, value):
            with pytest.raises(ValueError, match=argument):
                model.reconstruct(image, **{argument: value})
        else:
            assert isinstance(model.reconstruct(image, **{argument: value}), Image.Image), (argument, value)


@pytest.mark.parametrize(("pixels", "message"), [
    (lambda x: x * 255, "0-255 values"), (lambda x: (x - 0.5) / 0.25, "normalised"),
    (lambda x: x.index_fill(0, torch.tensor([1]), float("nan")), "NaN or inf"),
    (lambda x: x.index_fill(0, torch.tensor([0]), float("inf")), "NaN or inf")])
def test_a_tensor_that_is_not_images_in_0_1_is_refused(tiny_run, pixels, message):
    """Pixels of another range would come back as images that look like a result."""
    model = art_diffusion.load_pretrained(tiny_run / "checkpoints" / "best.ckpt")
    batch = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=message):
        model.reconstruct(pixels(batch))
    assert model.reconstruct(batch.clamp(0, 1)).shape == batch.shape


def test_generate_defaults_are_generate_yaml_ones():
    defaults = yaml.safe_load((CONF_DIR / "generate.yaml").read_text())
    params = inspect.signature(PretrainedGenerator.generate).parameters
    for name in ("class_name", "steps", "seed", "sampler", "guidance_scale", "eta", "batch_size"):
        assert params[name].default == defaults[name], name


@pytest.mark.slow  # torch.onnx's exporter traces the net (about 10 s)
def test_onnx_matches_pytorch_with_dynamic_batch_and_size(tiny_run, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    export(entry_cfg("export", f"ckpt_path={tiny_run}", f"output_dir={out}", "format=onnx"))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    model = art_diffusion.load_pretrained(out)
    for shape in ((1, 3, 32, 32), (3, 3, 48, 40), (2, 3, 64, 96)):
        batch = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        got = session.run(None, {"images": batch.numpy()})[0]
        difference = np.abs(got - model.reconstruct(batch).numpy()).max()
        assert got.shape == shape and difference < 1e-5, (shape, difference)  # measured: 6e-8 (float rounding)
    assert "model.onnx" in (out / "README.md").read_text()


@pytest.mark.slow  # exports a checkpoint
def test_export_script_writes_the_folder_and_refuses_in_one_line(tiny_run, tmp_path):
    def run(*args):
        return run_script("export", *args, cwd=tmp_path)

    done = run(f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}", "output_dir=folder")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in (tmp_path / "folder").iterdir()}
    for args, message in (((f"ckpt_path={tiny_run}", "output_dir=x", "format=tflite"), "format='tflite' must be"),
                          (("ckpt_path=nothing.ckpt", "output_dir=y"), "Checkpoint not found")):
        refused = run(*args)
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert refused.returncode == 2 and len(errors) == 1 and message in errors[0], refused.stderr[-2000:]
        assert not (tmp_path / args[1].split("=")[1]).exists()  # nothing written


@pytest.mark.slow  # exports and reconstructs through the docs' own code block
def test_the_docs_python_lines_run(tiny_run, inputs, tmp_path):
    page = (REPO / "docs" / "pretrained.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert blocks and "load_pretrained" in blocks[0]
    (tmp_path / "my_art").mkdir()
    shutil.copy(inputs / "odd.png", tmp_path / "my_art" / "painting.jpg")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for block in blocks:
            exec(block.replace("outputs/<date>/<time>", str(tiny_run)), {})  # noqa: S102
    finally:
        os.chdir(cwd)
