"""The built-in procedural demo dataset: layout, content, write-once caching, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from art_diffusion import DataError
from art_diffusion.data.demo import DEMO_CLASSES, write_demo_dataset

N, SIZE = 3, 64


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _snapshot(root):
    """relative path -> (mtime_ns, bytes) of every file under root."""
    return {p.relative_to(root): (p.stat().st_mtime_ns, p.read_bytes()) for p in _files(root)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "data"
    assert write_demo_dataset(root, images_per_class=N, image_size=SIZE, seed=0) == root
    return root


def test_layout_and_images(demo):
    assert len(DEMO_CLASSES) >= 5 and len(set(DEMO_CLASSES)) == len(DEMO_CLASSES)
    assert sorted(p.name for p in demo.iterdir() if p.is_dir()) == sorted(DEMO_CLASSES)
    marker = json.loads((demo / ".complete").read_text())
    assert (marker["images_per_class"], marker["image_size"], marker["seed"]) == (N, SIZE, 0)
    assert "version" in marker
    for name in DEMO_CLASSES:
        files = sorted((demo / name).iterdir())
        assert [f.stem for f in files] == [f"{name}_{i:04d}" for i in range(N)]
        for f in files:
            with Image.open(f) as im:
                assert im.mode == "RGB" and im.size == (SIZE, SIZE)
                arr = np.asarray(im, np.float32)
            assert arr.std() > 8, f"{f.name} is (nearly) constant"
            # not trivially smooth either: there is local detail (edges / texture)
            assert np.abs(np.diff(arr, axis=1)).mean() > 0.5, f"{f.name} has no detail"
    # no temporary or stale directories are left beside the dataset
    assert [p.name for p in demo.parent.iterdir() if p.name != "data" and not p.name.endswith(".lock")] == []


def test_classes_are_visually_distinct(demo):
    """Per-class feature (mean colour, contrast, edge energy, saturation) - class centroids differ clearly."""

    def features(path):
        a = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        edges = np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()
        sat = (a.max(-1) - a.min(-1)).mean()
        return np.concatenate([a.mean((0, 1)), [a.std(), 4 * edges, sat]])

    centroids = {c: np.mean([features(p) for p in sorted((demo / c).iterdir())], 0) for c in DEMO_CLASSES}
    for i, a in enumerate(DEMO_CLASSES):
        for b in DEMO_CLASSES[i + 1 :]:
            assert np.abs(centroids[a] - centroids[b]).max() > 0.02, (a, b)
    # and images within a class are not copies of each other
    for c in DEMO_CLASSES:
        imgs = [np.asarray(Image.open(p), np.float32) for p in sorted((demo / c).iterdir())]
        assert np.abs(imgs[0] - imgs[1]).mean() > 3, c


def test_second_call_does_not_rewrite(demo):
    before = _snapshot(demo)
    assert write_demo_dataset(demo, images_per_class=N, image_size=SIZE, seed=0) == demo
    assert _snapshot(demo) == before


def test_deterministic_and_seed_dependent(demo, tmp_path):
    again = write_demo_dataset(tmp_path / "again", images_per_class=N, image_size=SIZE, seed=0)
    assert {k: v[1] for k, v in _snapshot(again).items()} == {k: v[1] for k, v in _snapshot(demo).items()}

    other = write_demo_dataset(tmp_path / "other", images_per_class=N, image_size=SIZE, seed=1)
    for name in DEMO_CLASSES:
        a = np.asarray(Image.open(demo / name / f"{name}_0000.jpg"), np.float32)
        b = np.asarray(Image.open(other / name / f"{name}_0000.jpg"), np.float32)
        assert np.abs(a - b).mean() > 3, name


def test_changed_parameters_regenerate(tmp_path):
    root = write_demo_dataset(tmp_path / "d", images_per_class=2, image_size=32, seed=0)
    root = write_demo_dataset(root, images_per_class=1, image_size=40, seed=0)
    for name in DEMO_CLASSES:
        files = list((root / name).iterdir())
        assert len(files) == 1 and Image.open(files[0]).size == (40, 40)
    assert json.loads((root / ".complete").read_text())["image_size"] == 40


def test_interrupted_run_is_regenerated(tmp_path):
    root = write_demo_dataset(tmp_path / "d", images_per_class=2, image_size=32, seed=0)
    reference = {k: v[1] for k, v in _snapshot(root).items()}
    # Simulate a crash half-way: marker missing, one file gone, one truncated.
    (root / ".complete").unlink()
    (root / DEMO_CLASSES[0] / f"{DEMO_CLASSES[0]}_0001.jpg").unlink()
    (root / DEMO_CLASSES[1] / f"{DEMO_CLASSES[1]}_0000.jpg").write_bytes(b"")
    write_demo_dataset(root, images_per_class=2, image_size=32, seed=0)
    assert {k: v[1] for k, v in _snapshot(root).items()} == reference


def test_empty_existing_root_is_filled_but_foreign_root_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_demo_dataset(empty, images_per_class=1, image_size=32)
    assert (empty / ".complete").is_file()

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="exists and is not a demo dataset"):  # one message, exit 2 from the scripts
        write_demo_dataset(foreign, images_per_class=1, image_size=32)
    assert (foreign / "notes.txt").read_text() == "keep me"
