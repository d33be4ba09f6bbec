"""ArtDataModule: deterministic splits, the bad-file report (cached and lazy, across workers), the pixel cache."""

import csv
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from art_diffusion import DataError
from art_diffusion.data import ArtDataModule, DemoDataModule, pixel_cache
from art_diffusion.data.datamodule import split_indices
from art_diffusion.data.dataset import CachedImages
from art_diffusion.data.images import load_rgb
from tests.helpers.messy_folder import LAZY_BAD, corrupt_scan_jpeg, make_messy_folder, pattern


def _image_folder(root, per_class=6, classes=("drawings", "painting")):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return root


def _dm(root, tmp_path, **kwargs) -> ArtDataModule:
    defaults = {"image_size": 32, "batch_size": 4, "num_workers": 0, "cache": False,
                "cache_dir": str(tmp_path / "cache"), "report_dir": str(tmp_path / "run")}
    return ArtDataModule(str(root), **{**defaults, **kwargs})


def _report(run_dir) -> dict[str, str]:
    with open(run_dir / "bad_files.csv", newline="") as handle:
        return {os.path.basename(row["path"]): row["reason"] for row in csv.DictReader(handle)}


def _drain(dm, split="train"):
    """One epoch through a loader as the Trainer would (events handed to the DataModule); returns batch sizes."""
    sizes = []
    for batch in getattr(dm, f"{split}_dataloader")():
        images, _ = dm.on_before_batch_transfer(batch, 0)
        sizes.append(len(images))
    return sizes


def test_split_is_deterministic_disjoint_and_complete():
    a = split_indices(100, 0.1, 0.2, seed=7)
    assert a == split_indices(100, 0.1, 0.2, seed=7)
    assert a != split_indices(100, 0.1, 0.2, seed=8)
    assert (len(a["test"]), len(a["val"]), len(a["train"])) == (20, 10, 70)
    assert sorted(a["test"] + a["val"] + a["train"]) == list(range(100))


def test_datamodule_split_is_deterministic_and_bad_files_do_not_move_good_ones(tmp_path):
    root = _image_folder(tmp_path / "art")
    first, second = _dm(root, tmp_path, seed=3), _dm(root, tmp_path, seed=3)
    first.setup(), second.setup()
    splits = {s: [f.path for f in first.datasets[s].files] for s in ("train", "val", "test")}
    assert splits == {s: [f.path for f in second.datasets[s].files] for s in ("train", "val", "test")}
    assert first.classes == ["drawings", "painting"]
    # a file turning bad drops out of its split; every other file keeps its split
    victim = splits["train"][0]
    with open(victim, "r+b") as handle:
        handle.write(b"<html>")
    third = _dm(root, tmp_path, seed=3)
    third.setup()
    assert {s: [f.path for f in third.datasets[s].files] for s in splits} == {
        s: [p for p in paths if p != victim] for s, paths in splits.items()}


@pytest.mark.parametrize("cache", [True, False])
def test_every_bad_file_is_reported_once_with_its_reason(tmp_path, caplog, cache):
    root = tmp_path / "art"
    good, bad = make_messy_folder(root)
    dm = _dm(root, tmp_path, cache=cache, val_fraction=0, test_fraction=0, batch_size=5)
    with caplog.at_level(logging.INFO):
        dm.setup()
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Data: ")]
    assert len(summary) == 1
    upfront = bad if cache else {name: reason for name, reason in bad.items() if name not in LAZY_BAD}
    assert _report(tmp_path / "run") == upfront
    listed = len(good) + len(bad)
    assert f"{listed - len(upfront)} of {listed} image files used, {len(upfront)} skipped (" in summary[0]
    assert "ignored 2 non-image files (Thumbs.db, readme.txt)" in summary[0]
    assert "empty class folders (left out of the classes): empty_class" in summary[0]

    for _ in range(2):  # two epochs: the lazily found files are reported in the first, and only once
        sizes = _drain(dm)
        assert sizes == [5] * (len(sizes) - 1) + [sizes[-1]] and sum(sizes) == len(dm.datasets["train"])
    assert _report(tmp_path / "run") == bad
    lazy_warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Skipping" in r.getMessage()]
    assert len(lazy_warnings) == (0 if cache else len(LAZY_BAD))


def _first(cache) -> list:
    """The header cache's ``[size, mtime_ns, verdict]`` of its first file (a good one)."""
    return cache["files"][sorted(cache["files"])[0]]


def _forge_verdict(cache):  # well-formed, seal kept: a good file said to be bad
    assert _first(cache)[2] is None
    _first(cache)[2] = ["not an image", "forged"]


HEADER_CACHE_DAMAGE = {
    "not json": lambda path: path.write_text("{not json"),
    "a list": lambda path: path.write_text("[]"),
    "older format, no seal": lambda path: path.write_text(json.dumps(json.loads(path.read_text())["files"])),
    "an entry an int": lambda path: _edit_json(path, lambda cache: cache["files"].update(x=5)),
    "a verdict an int": lambda path: _edit_json(path, lambda cache: _first(cache).__setitem__(2, 5)),
    "a verdict forged": lambda path: _edit_json(path, _forge_verdict),
}


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage", HEADER_CACHE_DAMAGE)
def test_a_header_cache_not_as_it_was_written_is_logged_once_and_every_header_checked_again(tmp_path, caplog, damage):
    root = _image_folder(tmp_path / "art")
    (root / "painting" / "page.jpg").write_bytes(b"<html>not an image</html>")
    _dm(root, tmp_path, val_fraction=0.2, test_fraction=0).setup()
    report = _report(tmp_path / "run")
    assert report == {"page.jpg": "not an image"}
    (cache,) = (tmp_path / "cache" / "headers").glob("*.json")
    written = cache.read_text()
    HEADER_CACHE_DAMAGE[damage](cache)
    with caplog.at_level(logging.INFO):
        again = _dm(root, tmp_path, val_fraction=0.2, test_fraction=0)
        again.setup()  # never a traceback
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"The header cache {cache} is damaged, edited or an older version's" in warnings[0]
    assert _report(tmp_path / "run") == report  # the forged verdict was not used
    assert sum(len(dataset) for dataset in again.datasets.values()) == 12
    assert cache.read_text() == written  # written again as it was


@pytest.mark.slow  # DataLoader worker processes
def test_failures_inside_worker_processes_are_reported_once_and_batches_stay_full(tmp_path):
    root = _image_folder(tmp_path / "art", per_class=6)
    for i in range(3):
        (root / "painting" / f"corrupt_{i}.jpg").write_bytes(corrupt_scan_jpeg(pattern(200, 150, seed=i)))
    dm = _dm(root, tmp_path, num_workers=2, batch_size=5, val_fraction=0, test_fraction=0)
    dm.setup()
    assert _report(tmp_path / "run") == {}  # headers and end markers are fine: found by the workers
    for _ in range(2):
        sizes = _drain(dm)
        assert sizes == [5, 5, 5]
    assert _report(tmp_path / "run") == {f"corrupt_{i}.jpg": "corrupt" for i in range(3)}


def test_all_bad_folder_stops_before_training_with_a_clear_error(tmp_path):
    root = tmp_path / "art"
    (root / "painting").mkdir(parents=True)
    for i in range(3):
        (root / "painting" / f"{i}.jpg").write_text("<html>404</html>")
    with pytest.raises(ValueError, match=r"None of the 3 image files .* can be used \(0 of 3 image files used, "
                                         r"3 skipped \(3 not an image\)"):
        _dm(root, tmp_path).setup()
    assert _report(tmp_path / "run") == {f"{i}.jpg": "not an image" for i in range(3)}  # written all the same


def test_too_many_bad_files_stop_before_training_unless_allowed(tmp_path):
    root = _image_folder(tmp_path / "art", per_class=2)
    for i in range(5):
        (root / "painting" / f"empty_{i}.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"5 of the 9 image files .* data.max_bad_fraction=0.5"):
        _dm(root, tmp_path, val_fraction=0, test_fraction=0).setup()
    dm = _dm(root, tmp_path, val_fraction=0, test_fraction=0, max_bad_fraction=0.6)
    dm.setup()
    assert len(dm.datasets["train"]) == 4


def test_pixel_cache_is_reused_when_nothing_changed_and_rebuilt_when_a_file_did(tmp_path):
    root = _image_folder(tmp_path / "art")
    first = _dm(root, tmp_path, cache=True)
    first.setup()
    assert first.store.built_s is not None
    again = _dm(root, tmp_path, cache=True)
    again.setup()
    assert again.store.path == first.store.path and again.store.built_s is None

    changed = root / "drawings" / "0.jpg"
    pattern(40, 40, seed=9).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    rebuilt = _dm(root, tmp_path, cache=True)
    rebuilt.setup()
    assert rebuilt.store.path != first.store.path and rebuilt.store.built_s is not None
    assert first.store.path.exists()  # stale, but this process read it: kept (see test_storage for its removal)
    expected = load_rgb(changed, 32, max_pixels=50_000_000, min_size=32)
    # row 0: drawings/0.jpg, the new content
    assert np.array_equal(np.load(rebuilt.store.path)[0], expected.transpose(2, 0, 1))

    other_size = _dm(root, tmp_path, cache=True, image_size=40)
    other_size.setup()
    assert other_size.store.path != rebuilt.store.path and rebuilt.store.path.exists()


def test_cache_auto_is_on_when_the_store_fits_and_off_when_it_would_not(tmp_path, caplog):
    root = _image_folder(tmp_path / "art")
    with caplog.at_level(logging.INFO, logger="art_diffusion.data.datamodule"):
        auto = _dm(root, tmp_path, cache="auto")
        auto.setup()
    assert auto.use_cache and auto.store is not None and "Pixel cache (data.cache=auto): on" in caplog.text
    assert isinstance(auto.datasets["train"], CachedImages)  # epochs read the store, decode nothing
    fits, verdict = pixel_cache.fits(tmp_path / "not-yet-created", 10**9, 128)  # 49 PB
    assert not fits and "MB free" in verdict
    assert pixel_cache.fits(tmp_path / "not-yet-created", 10, 32)[0]


def test_cached_loader_serves_the_same_pixels_as_decoding(tmp_path):
    root = _image_folder(tmp_path / "art")
    cached, decoded = _dm(root, tmp_path, cache=True), _dm(root, tmp_path)
    cached.setup(), decoded.setup()
    a, _, events = next(iter(cached.val_dataloader()))
    b, _, _ = next(iter(decoded.val_dataloader()))
    assert events == {"decoded": 0, "skipped": []}
    assert torch.equal(a, b)


def test_hflip_flips_some_training_images_and_no_validation_image(tmp_path):
    root = _image_folder(tmp_path / "art", per_class=10)
    plain, flipped = _dm(root, tmp_path, cache=True), _dm(root, tmp_path, cache=True, hflip=True)
    plain.setup(), flipped.setup()
    torch.manual_seed(0)
    train = [torch.equal(plain.datasets["train"][i][0], flipped.datasets["train"][i][0]) for i in range(16)]
    assert 0 < sum(train) < 16
    val = [torch.equal(plain.datasets["val"][i][0], flipped.datasets["val"][i][0]) for i in range(2)]
    assert all(val)


def test_missing_root_explains_the_layout_and_the_demo(tmp_path):
    dm = ArtDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        dm.setup()
    assert "drawings/" in str(info.value) and "experiment=demo" in str(info.value)


def test_empty_root_is_refused(tmp_path):
    (tmp_path / "art" / "painting").mkdir(parents=True)
    with pytest.raises(DataError, match="No image files"):
        ArtDataModule(str(tmp_path / "art")).setup()


def test_demo_datamodule_generates_once_then_loads_like_any_image_folder(tmp_path):
    root = tmp_path / "demo"
    dm = DemoDataModule(str(root), images_per_class=3, source_size=32, image_size=32, batch_size=2, num_workers=0,
                        cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    mtimes = [p.stat().st_mtime_ns for p in files]
    dm.setup()
    assert len(dm.classes) >= 5
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    images, _, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32)


def test_an_empty_class_folder_is_left_out_of_the_classes_with_a_warning(tmp_path, caplog):
    root = _image_folder(tmp_path / "art", per_class=4, classes=("drawings", "painting"))
    for empty in ("aaa_empty", "iconography"):  # before, between: the labels after them must shift
        (root / empty).mkdir()
    (root / "iconography" / "notes.txt").write_text("no image here")
    dm = _dm(root, tmp_path, val_fraction=0, test_fraction=0)
    with caplog.at_level(logging.INFO):
        dm.setup()
    assert dm.classes == ["drawings", "painting"]
    labels = {os.path.basename(os.path.dirname(f.path)): f.label for f in dm.datasets["train"].files}
    assert labels == {"drawings": 0, "painting": 1}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "Leaving out" in
                  r.getMessage()]
    assert "aaa_empty, iconography" in warning and "data.root" in warning
