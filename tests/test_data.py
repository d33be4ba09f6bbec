import logging

import numpy as np
import pytest
from PIL import Image

from art_diffusion.data import ArtDataModule, DemoDataModule
from art_diffusion.data.datamodule import split_indices


def _image_folder(root, per_class=6, classes=("drawings", "painting")):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return root


def test_split_is_deterministic_disjoint_and_complete():
    a = split_indices(100, 0.1, 0.2, seed=7)
    assert a == split_indices(100, 0.1, 0.2, seed=7)
    assert a != split_indices(100, 0.1, 0.2, seed=8)
    assert (len(a["test"]), len(a["val"]), len(a["train"])) == (20, 10, 70)
    assert sorted(a["test"] + a["val"] + a["train"]) == list(range(100))


def test_datamodule_split_does_not_depend_on_listing_order(tmp_path):
    root = _image_folder(tmp_path / "art")
    first = ArtDataModule(str(root), image_size=32, batch_size=4, num_workers=0, seed=3)
    first.setup()
    second = ArtDataModule(str(root), image_size=32, batch_size=4, num_workers=0, seed=3)
    second.setup()
    for split in ("train", "val", "test"):
        assert first.datasets[split].files == second.datasets[split].files
    assert first.classes == ["drawings", "painting"]


def test_broken_file_is_skipped_with_one_warning_and_batches_stay_full(tmp_path, caplog):
    root = _image_folder(tmp_path / "art", per_class=4)
    broken = root / "painting" / "error_page.jpg"
    broken.write_text("<html><body>404 Not Found</body></html>")
    dm = ArtDataModule(str(root), image_size=32, batch_size=9, num_workers=0, val_fraction=0, test_fraction=0)
    dm.setup()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # two epochs: still one warning
            images, labels, _ = next(iter(dm.train_dataloader()))
            assert images.shape == (9, 3, 32, 32)
            assert 0 <= images.min() and images.max() <= 1
    warnings = [r for r in caplog.records if "error_page.jpg" in r.getMessage()]
    assert len(warnings) == 1


def test_missing_root_explains_the_layout_and_the_demo(tmp_path):
    dm = ArtDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        dm.setup()
    assert "drawings/" in str(info.value) and "experiment=demo" in str(info.value)


def test_empty_root_is_refused(tmp_path):
    (tmp_path / "art" / "painting").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="No image files"):
        ArtDataModule(str(tmp_path / "art")).setup()


def test_demo_datamodule_generates_once_then_loads_like_any_image_folder(tmp_path):
    root = tmp_path / "demo"
    dm = DemoDataModule(str(root), images_per_class=3, source_size=32, image_size=32, batch_size=2, num_workers=0)
    dm.prepare_data()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    mtimes = [p.stat().st_mtime_ns for p in files]
    dm.setup()
    assert len(dm.classes) >= 5
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    images, _, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32)
