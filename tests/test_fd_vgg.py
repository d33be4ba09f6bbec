"""FD-VGG: the Fréchet distance itself, and its behaviour on real folders (random VGG weights: no download)."""

import json
import logging
import os

import numpy as np
import pytest
import torch

from art_diffusion.data.demo import DEMO_CLASSES, render_demo_image
from art_diffusion.metrics.fd_vgg import fd_vgg_folders, frechet_distance, load_images
from art_diffusion.metrics.scores import kernel_distance
from tests.helpers.scripts import run_script

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*RANDOM.*"),
]
FAST = {"weights": "random", "layer": 22, "input_size": 32}  # relu4_3 at 32 px: about a second on a CPU


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """48 demo paintings split into two halves of one folder, and 24 images of uniform noise."""
    root = tmp_path_factory.mktemp("fd")
    rng = np.random.default_rng(0)
    for half in ("a", "b"):
        (root / half).mkdir()
    (root / "noise").mkdir()
    for i in range(48):
        name = DEMO_CLASSES[i % len(DEMO_CLASSES)]
        render_demo_image(name, i, image_size=32).save(root / ("a" if i % 2 else "b") / f"{i:03d}.png")
    for i in range(24):
        from PIL import Image

        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "noise" / f"{i:03d}.png")
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")  # skipped with a warning, never fatal
    return root


def _old_frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """The project's former hand-written formula: Tr((C1 C2)^(1/2)) as the root of C1^(1/2) C2 C1^(1/2)."""
    def sqrtm_psd(m):
        values, vectors = torch.linalg.eigh(m)
        return (vectors * values.clamp(min=0).sqrt()) @ vectors.T

    mu1, mu2, cov1, cov2 = f1.mean(0), f2.mean(0), torch.cov(f1.T), torch.cov(f2.T)
    root1 = sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * trace_root)


@pytest.mark.parametrize(("n1", "n2", "dim"), [(300, 200, 64), (60, 50, 512)])  # full-rank, and VGG-wide singular
def test_torchmetrics_frechet_distance_equals_the_former_formula_and_scipy(n1, n2, dim):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    gen = torch.Generator().manual_seed(0)
    f1 = torch.randn(n1, dim, generator=gen, dtype=torch.float64).relu()
    f2 = torch.randn(n2, dim, generator=gen, dtype=torch.float64).relu() * 1.2 + 0.05
    got, old = frechet_distance(f1, f2), _old_frechet_distance(f1, f2)
    assert got == pytest.approx(old, rel=1e-3)
    c1, c2 = np.cov(f1.numpy(), rowvar=False), np.cov(f2.numpy(), rowvar=False)
    reference = ((f1.mean(0) - f2.mean(0)).square().sum().item()
                 + np.trace(c1 + c2 - 2 * scipy_linalg.sqrtm(c1 @ c2).real))
    assert got == pytest.approx(reference, rel=1e-3)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_another():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 16, generator=gen), torch.randn(200, 16, generator=gen)
    same, _ = kernel_distance(a, b)
    shifted, _ = kernel_distance(a, b + 1)
    assert abs(same) < 0.02 < shifted
    assert kernel_distance(a, b + 1) == kernel_distance(a, b + 1)  # seeded subsets


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_fd_vgg_is_near_zero_for_two_halves_of_a_folder_and_large_for_noise(folders, caplog):
    halves = fd_vgg_folders(folders / "a", folders / "b", image_size=32, **FAST)["fd_vgg"]
    noise = fd_vgg_folders(folders / "a", folders / "noise", image_size=32, **FAST)["fd_vgg"]
    assert "broken.jpg" in caplog.text
    print(f"FD-VGG halves {halves:.4g}, noise {noise:.4g}")
    assert 0 <= halves < 0.1 * noise, (halves, noise)


def test_load_images_resizes_and_reports_empty_folders(folders, tmp_path):
    images = load_images(folders / "a", image_size=16, max_images=5)
    assert images.shape == (5, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    with pytest.raises(FileNotFoundError, match="No image files"):
        load_images(tmp_path, 16)


@pytest.mark.slow
def test_fd_vgg_cli_prints_and_writes_json(folders, tmp_path):
    out = tmp_path / "fd.json"
    result = run_script("fd_vgg", f"real_dir={folders / 'a'}", f"fake_dir={folders / 'noise'}", "image_size=32",
                        "vgg_weights=random", "layer=22", "input_size=32", "max_images=8", "device=cpu",
                        f"output_json={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert saved["fd_vgg"] > 0 and saved["num_real"] == 8 and saved["num_fake"] == 8 and "kid" in saved
    assert json.loads(result.stdout.strip().splitlines()[-1]) == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fd.json"]  # nothing else written


def test_fd_vgg_tool_scores_two_folders_and_writes_json(folders, tmp_path, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from art_diffusion.tools.fd_vgg import fd_vgg
    from tests.helpers.config import CONF_DIR

    out = tmp_path / "fd.json"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("fd_vgg", overrides=[f"real_dir={folders / 'a'}", f"fake_dir={folders / 'noise'}",
                                           "image_size=32", "vgg_weights=random", "layer=22", "input_size=32",
                                           "max_images=8", "device=cpu", f"output_json={out}"])
    GlobalHydra.instance().clear()
    result = fd_vgg(cfg)
    assert result["fd_vgg"] > 0 and result["num_real"] == result["num_fake"] == 8 and "kid" in result
    assert json.loads(out.read_text()) == result == json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("damage", ["truncated", "a byte flipped", "an older version's plain tensor",
                                    "another folder's file", "not a torch file"])
def test_a_damaged_or_edited_fd_vgg_feature_cache_is_logged_and_recomputed(folders, tmp_path, monkeypatch, caplog,
                                                                            damage):
    from art_diffusion.metrics.fd_vgg import folder_features
    from art_diffusion.nets.vgg.weights import _random_state

    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "vgg.pt"  # a weights file, not "random": only real weights are cached
    torch.save(_random_state(FAST["layer"] + 1), weights)
    settings = (32, None, str(weights), FAST["layer"], FAST["input_size"], 32, "cpu")
    fresh = folder_features(folders / "a", *settings)
    other = folder_features(folders / "b", *settings)
    files = {p.stat().st_mtime_ns: p for p in (tmp_path / "cache" / "fd_vgg").glob("*.pt")}
    assert len(files) == 2
    path, other_path = (p for _, p in sorted(files.items()))  # a's, then b's
    assert torch.equal(folder_features(folders / "a", *settings), fresh)  # read back from the cache
    if damage == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "a byte flipped":  # a feature value: the zip's own checks do not see it
        data = bytearray(path.read_bytes())
        at = data.find(fresh[0].numpy().tobytes())
        data[at] ^= 0x40
        path.write_bytes(bytes(data))
    elif damage == "an older version's plain tensor":
        torch.save(fresh + 1, path)
    elif damage == "another folder's file":
        path.write_bytes(other_path.read_bytes())
    else:
        path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        again = folder_features(folders / "a", *settings)  # never a traceback
    assert torch.equal(again, fresh) and not torch.equal(other[: len(fresh)], fresh)
    warnings = [r.getMessage() for r in caplog.records if "FD-VGG feature cache" in r.getMessage()]
    assert len(warnings) == 1 and f"{path} is damaged or edited" in warnings[0]
    assert torch.equal(folder_features(folders / "a", *settings), fresh)  # the cache was written again
