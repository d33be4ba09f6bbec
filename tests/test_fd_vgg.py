"""FD-VGG: the Fréchet distance itself, and its behaviour on real folders (random VGG weights: no download)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from art_diffusion.data.demo import DEMO_CLASSES, render_demo_image
from art_diffusion.metrics.fd_vgg import fd_vgg_folders, frechet_distance, frechet_distance_from_stats, load_images
from tests.conftest import REPO

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


def test_frechet_distance_matches_the_gaussian_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var1, var2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 0.25])
    expected = (mu1 - mu2).square().sum() + (var1 + var2 - 2 * (var1 * var2).sqrt()).sum()  # diagonal case
    got = frechet_distance_from_stats(mu1, torch.diag(var1), mu2, torch.diag(var2))
    assert got == pytest.approx(float(expected), rel=1e-9)
    # a rotated (non-diagonal) pair: invariant to rotating both
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    rotated = frechet_distance_from_stats(q @ mu1.double(), q @ torch.diag(var1).double() @ q.T,
                                          q @ mu2.double(), q @ torch.diag(var2).double() @ q.T)
    assert rotated == pytest.approx(float(expected), rel=1e-6)


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


def test_fd_vgg_cli_prints_and_writes_json(folders, tmp_path):
    out = tmp_path / "fd.json"
    cmd = [sys.executable, str(REPO / "scripts" / "fd_vgg.py"), f"real_dir={folders / 'a'}",
           f"fake_dir={folders / 'noise'}", "image_size=32", "vgg_weights=random", "layer=22", "input_size=32",
           "max_images=8", "device=cpu", f"output_json={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert saved["fd_vgg"] > 0 and saved["num_real"] == 8 and saved["num_fake"] == 8
    assert json.loads(result.stdout.strip().splitlines()[-1]) == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fd.json"]  # nothing else written
