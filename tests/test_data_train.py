"""Training through the real config, DataModule and Trainer on a folder with every kind of bad file mixed in."""

import csv
import logging
import os

import pytest

from art_diffusion.run.train import train
from tests.helpers.messy_folder import make_messy_folder

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


def _art(root, *overrides):
    # the real art config (TINY composes the demo one): the messy folder, all of it for training and validation
    return ["data._target_=art_diffusion.data.ArtDataModule", "~data.images_per_class", "~data.source_size",
            f"data.root={root}", "data.val_fraction=0.34", "data.test_fraction=0", "test=false", *overrides]


def _report(run_dir):
    with open(run_dir / "bad_files.csv", newline="") as handle:
        return {os.path.basename(row["path"]): row["reason"] for row in csv.DictReader(handle)}


def _decoded_per_epoch(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Files decoded by")]
    return lines[-1]


def test_training_survives_and_reports_every_bad_file(compose_cfg, tmp_path, caplog):
    root = tmp_path / "messy"
    _, bad = make_messy_folder(root, good_per_class=2)
    with caplog.at_level(logging.INFO):
        metrics = train(compose_cfg(*_art(root)))
    assert metrics["val/loss"] == metrics["val/loss"]  # trained and validated (not NaN)
    # one epoch asks for every file of train and val once: the damage found inside the workers is reported too
    assert _report(tmp_path / "run") == bad
    assert len([r for r in caplog.records if r.getMessage().startswith("Skipping")]) == len(bad)


@pytest.mark.slow  # two runs of two epochs
def test_second_epoch_and_second_run_read_the_pixel_cache_without_decoding(compose_cfg, tmp_path, caplog):
    root = tmp_path / "messy"
    _, bad = make_messy_folder(root, good_per_class=2)
    with caplog.at_level(logging.INFO):
        train(compose_cfg(*_art(root, "data.cache=true"), output_dir=tmp_path / "first"))
    assert _report(tmp_path / "first") == bad  # the cache build decoded everything: the full report up front
    assert all(f"{stage} [0]" in _decoded_per_epoch(caplog) for stage in ("sanity_check", "train", "validate"))

    # Overwrite every source image with garbage of the same size and mtime: the cache key still matches, so a
    # run that decoded any image would now find it broken. It must train on the cached pixels alone.
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > 0:
            stat = path.stat()
            path.write_bytes(b"\0" * stat.st_size)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(compose_cfg(*_art(root, "data.cache=true", "trainer.max_epochs=2"), output_dir=tmp_path / "second"))
    assert _report(tmp_path / "second") == bad
    assert "pixel cache reused" in caplog.text
    assert all(f"{stage} [0, 0]" in _decoded_per_epoch(caplog) for stage in ("train", "validate"))
