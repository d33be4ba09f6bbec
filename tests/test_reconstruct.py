"""scripts/reconstruct.py: from a checkpoint path alone, odd sizes included, broken files reported and skipped."""

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from art_diffusion.checkpoints import load_net
from art_diffusion.data.images import load_rgb
from art_diffusion.metrics.pixel import psnr
from art_diffusion.tools.inputs import find_inputs
from art_diffusion.tools.reconstruct import Reconstructor, pad_to_multiple, reconstruct
from tests.helpers.config import CONF_DIR
from tests.helpers.scripts import run_script

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*")


def _write_inputs(root: Path) -> dict[str, tuple[int, int]]:
    """An odd-sized PNG, a grayscale JPEG in a sub-folder, a broken .jpg and a non-image; returns (w, h) by name."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (131, 97, 3), dtype=np.uint8)).save(root / "odd.png")
    Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8)).save(root / "sub" / "gray.jpg")
    (root / "broken.jpg").write_text("<html>404 not found</html>")
    (root / "notes.txt").write_text("not an image")
    return {"odd": (97, 131), "sub/gray": (56, 40)}


def _read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_cli_native_size_reconstructs_full_resolution(tiny_run, tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    sizes = _write_inputs(inputs)
    # a valid image whose name is not UTF-8 (Latin-1 bytes from an old archive): its row is written, escaped
    with open(os.path.join(os.fsencode(inputs), b"caf\xe9.png"), "wb") as handle:
        Image.new("RGB", (40, 48), (200, 30, 30)).save(handle, "PNG")
    # two inputs sharing a stem: each keeps its own output (same.jpg.png, same.png.png), none overwritten
    Image.new("RGB", (24, 16), (250, 250, 250)).save(inputs / "same.jpg")
    Image.new("RGB", (16, 24), (0, 0, 0)).save(inputs / "same.png")
    result = run_script("reconstruct", f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}", f"input={inputs}",
                        f"output_dir={out}", "size=native", "device=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    for name, (w, h) in sizes.items():
        assert Image.open(out / "reconstructions" / f"{name}.png").size == (w, h)
        assert Image.open(out / "side_by_side" / f"{name}.png").size == (2 * w + 4, h)
    rows = _read_csv(out / "results.csv")
    by_input = {Path(r["input"]).name: r for r in rows}
    assert set(by_input) == {"broken.jpg", "odd.png", "gray.jpg", "caf\\xe9.png", "same.jpg", "same.png", "mean"}
    assert Image.open(out / "reconstructions" / "same.jpg.png").size == (24, 16)
    assert Image.open(out / "reconstructions" / "same.png.png").size == (16, 24)
    assert not (out / "reconstructions" / "same.png").exists()
    log_text = (out / "reconstruct.log").read_text()
    assert "Wrote 5 reconstruction(s)" in log_text and "same.jpg -> same.jpg.png" in log_text
    assert (by_input["caf\\xe9.png"]["width"], by_input["caf\\xe9.png"]["error"]) == ("40", "")
    assert by_input["broken.jpg"]["error"].startswith("not an image: an HTML page")
    assert (by_input["odd.png"]["width"], by_input["odd.png"]["height"]) == ("97", "131")
    ok = [float(by_input[n]["psnr"]) for n in ("odd.png", "gray.jpg", "caf\\xe9.png", "same.jpg", "same.png")]
    assert float(by_input["mean"]["psnr"]) == pytest.approx(sum(ok) / 5)
    assert re.search(r"broken.jpg +skipped:", result.stdout) and "mean" in result.stdout
    # the log lives beside the results; no Hydra run dir or .hydra copy anywhere else
    assert (out / "reconstruct.log").exists() and not (out / ".hydra").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]


def test_train_size_is_the_network_on_the_resized_image(tiny_run, tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    _write_inputs(inputs)
    best = tiny_run / "checkpoints" / "best.ckpt"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("reconstruct", overrides=[f"ckpt_path={best}", f"input={inputs}/*.png", f"output_dir={out}",
                                                "side_by_side=false", "device=cpu"])
    rows = reconstruct(cfg)

    assert [Path(r["input"]).name for r in rows] == ["odd.png"]  # the glob: PNGs of the top folder only
    net, config = load_net(best)
    image = torch.from_numpy(load_rgb(inputs / "odd.png", config["data"]["image_size"])).permute(2, 0, 1) / 255
    with torch.no_grad():
        expected = net(image[None]).clamp(0, 1)[0]
    saved = torch.from_numpy(np.array(Image.open(out / "reconstructions" / "odd.png"))).permute(2, 0, 1) / 255
    assert saved.shape == (3, 32, 32)
    assert (saved - expected).abs().max() <= 0.5 / 255 + 1e-6  # only the PNG's rounding
    assert rows[0]["psnr"] == pytest.approx(float(psnr(expected[None], image[None])), rel=1e-5)
    assert not (out / "side_by_side").exists()


def test_native_padding_crops_back_exactly(tiny_run):
    net, _ = load_net(tiny_run / "checkpoints" / "best.ckpt")
    x = torch.rand(2, 3, 45, 61)
    padded = pad_to_multiple(x)
    assert padded.shape[-2:] == (48, 64) and torch.equal(padded[..., :45, :61], x)
    assert pad_to_multiple(torch.rand(1, 3, 3, 5)).shape[-2:] == (8, 8)  # too small to reflect: replicated
    reconstructor = Reconstructor(net, 32, size="native")
    aligned = torch.rand(1, 3, 48, 64)
    with torch.no_grad():  # as the tool runs it (the fused eval pass; with autograd the net runs PyTorch's ops)
        assert torch.equal(reconstructor(aligned), net(aligned).clamp(0, 1))
    assert reconstructor(x).shape == x.shape


def test_inputs_sharing_a_name_get_distinct_output_names(tmp_path):
    for name in ("a.jpg", "a.png", "A.jpeg", "a.jpg.png", "b.png", "sub/a.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    names = {f.path.relative_to(tmp_path).as_posix(): f.name for f in find_inputs(str(tmp_path))}
    assert names == {"A.jpeg": "A.jpeg", "a.jpg": "a.jpg", "a.png": "a.png", "a.jpg.png": "a.jpg~1", "b.png": "b",
                     "sub/a.png": "sub/a"}
    assert [f.name for f in find_inputs(str(tmp_path))] == [f.name for f in find_inputs(str(tmp_path))]


def test_a_named_pipe_is_refused_as_input_and_skipped_in_a_folder(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ValueError, match="not a regular file or a directory"):
        find_inputs(str(tmp_path / "pipe.jpg"))
    Image.new("RGB", (8, 8)).save(tmp_path / "real.png")
    # listed by name, a pipe would be opened by the decoder and wait for a writer for ever
    assert [f.name for f in find_inputs(str(tmp_path))] == ["real"]


def test_missing_input_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        find_inputs(str(tmp_path / "nope.jpg"))
    with pytest.raises(FileNotFoundError, match="the glob matches no files"):
        find_inputs(str(tmp_path / "*.jpg"))
    with pytest.raises(FileNotFoundError, match="no image files in this directory"):
        find_inputs(str(tmp_path))


@pytest.mark.slow  # runs the script end to end (in-process: run_script)
def test_a_failed_call_leaves_no_output_dir_behind(tiny_run, tmp_path):
    result = run_script("reconstruct", f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}",
                        f"input={tmp_path / 'nope.jpg'}", cwd=tmp_path)
    assert result.returncode != 0 and "no such file or directory" in result.stderr
    assert not (tmp_path / "outputs").exists()  # the default outputs/reconstruct/<date>/<time>, made by Hydra


def _article_net_with_statistics():
    """The article's network (random weights, BatchNorm statistics made non-trivial) in eval mode."""
    from art_diffusion.nets import ConvDiffusionModel

    torch.manual_seed(0)
    net = ConvDiffusionModel(base_channels=16).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(0, 1)
            module.running_var.uniform_(0.5, 2)
    return net


def test_tiled_native_inference_equals_the_whole_image(one_thread):
    net = _article_net_with_statistics()
    x = torch.rand(1, 3, 301, 259)  # padded to 304 x 264: three rows and three columns of 128 px tiles
    whole = Reconstructor(net, 32, size="native")(x)
    for overlap in (64, 96):
        tiled = Reconstructor(net, 32, size="native", tile_size=128, tile_overlap=overlap)(x)
        assert tiled.shape == whole.shape
        assert (tiled - whole).abs().max() < 1e-5  # measured: 1.2e-7, float rounding only: no seam
    # too little overlap: the tiles' borders show (what the default overlap avoids)
    assert (Reconstructor(net, 32, size="native", tile_size=128, tile_overlap=16)(x) - whole).abs().max() > 1e-4


def test_ssim_in_strips_equals_one_call():
    from torchmetrics.functional.image import structural_similarity_index_measure

    from art_diffusion.metrics.pixel import ssim

    torch.manual_seed(0)
    a = torch.rand(2, 3, 301, 203)
    b = (a + 0.2 * torch.rand(2, 3, 301, 203)).clamp(0, 1)
    whole = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    for strip_pixels in (1, 203 * 7, 203 * 50):
        assert torch.allclose(ssim(a, b, strip_pixels), whole, atol=1e-6)


@pytest.mark.parametrize(("overrides", "message"), [
    (["tile_size=100"], "tile_size=100 and tile_overlap=64 must be multiples of 8"),
    (["tile_size=64", "tile_overlap=64"], "tile_overlap=64 must be smaller than tile_size=64"),
    (["tile_size=16"], r"tile_size=16 must be"),
])
def test_tile_settings_are_checked(overrides, message):
    from art_diffusion import ConfigError
    from art_diffusion.run.validate import check_values

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("reconstruct", overrides=["ckpt_path=x.ckpt", "input=x.png", "output_dir=out", *overrides])
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=message):
        check_values(cfg, "reconstruct")
