"""Data edge cases that crashed or misled before (issue 11, section 4): symlink loops, names that are not UTF-8,
broken class links, a validation folder with other classes, HEIC/AVIF files, a file as data.root, a folder of
truncated downloads. Each ends in the normal report or one message, before training."""

import csv
import logging
import os

import pytest

from art_diffusion import UserError
from art_diffusion.data import ArtDataModule
from art_diffusion.data.listing import list_image_folder, list_images
from art_diffusion.tools.inputs import find_inputs
from tests.helpers.messy_folder import jpeg_bytes, pattern

RAW_NAME = b"caf\xe9_\xff.jpg"  # Latin-1 bytes: not valid UTF-8


def _folder(root, classes=("drawings", "painting"), per_class=4):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(jpeg_bytes(pattern(48, 40, seed=10 * c + i)))
    return root


def _dm(root, tmp_path, **kwargs) -> ArtDataModule:
    defaults = {"image_size": 32, "batch_size": 4, "num_workers": 0, "cache_dir": str(tmp_path / "cache"),
                "report_dir": str(tmp_path / "run"), "min_size": 8}
    return ArtDataModule(str(root), **{**defaults, **kwargs})


def _report_rows(tmp_path) -> list[dict]:
    with open(tmp_path / "run" / "bad_files.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_symlink_loop_is_walked_once_and_reported(tmp_path, caplog):
    root = _folder(tmp_path / "art")
    os.symlink("..", root / "painting" / "loop")  # painting/loop/painting/loop/... forever
    os.symlink(root / "drawings", root / "painting" / "same_as_drawings")
    listing = list_image_folder(root)
    assert len(listing.files) == 8
    assert sorted(os.path.basename(p) for p in listing.loops) == ["loop", "same_as_drawings"]
    with caplog.at_level(logging.INFO):
        _dm(root, tmp_path, val_fraction=0.25, test_fraction=0.25).setup()
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Data: "))
    assert "8 of 8 image files used" in summary and "symlink loops" in summary and "loop" in summary


def test_a_tree_nested_deeper_than_pythons_recursion_is_listed(tmp_path):
    """1,200 folders deep (far below PATH_MAX): a recursive walk ends in RecursionError, a traceback at start-up."""
    root = _folder(tmp_path / "art", classes=("drawings",), per_class=1)
    chain = [root / "drawings"]
    for _ in range(1200):
        chain.append(chain[-1] / "a")
        chain[-1].mkdir()
    (chain[-1] / "deep.jpg").write_bytes((root / "drawings" / "0.jpg").read_bytes())
    try:
        listing = list_image_folder(root)
        assert [os.path.basename(f.path) for f in listing.files] == ["0.jpg", "deep.jpg"]
        assert len(list_images(root)) == 2 and len(find_inputs(str(root))) == 2  # reconstruct.py input=DIR
        with pytest.raises(UserError, match="nest too deep for Python's glob"):  # input='DIR/**/*.jpg'
            find_inputs(str(root / "**" / "*.jpg"))
    finally:  # bottom up, without recursion: Python 3.11's shutil.rmtree (pytest's clean-up) recurses
        (chain[-1] / "deep.jpg").unlink()
        for folder in reversed(chain[1:]):
            folder.rmdir()


def test_a_name_that_is_not_utf8_is_written_to_the_report(tmp_path):
    root = _folder(tmp_path / "art")
    bad = os.path.join(os.fsencode(root / "painting"), RAW_NAME)
    with open(bad, "wb") as handle:
        handle.write(b"<html>404</html>")
    _dm(root, tmp_path, val_fraction=0.25, test_fraction=0.25).setup()
    rows = _report_rows(tmp_path)
    assert [row["reason"] for row in rows] == ["not an image"]
    assert rows[0]["path"].endswith("caf\\xe9_\\xff.jpg")  # the raw bytes, readable


def test_a_class_folder_that_is_a_broken_link_is_reported(tmp_path, caplog):
    root = _folder(tmp_path / "art")
    os.symlink(tmp_path / "unmounted" / "sculpture", root / "sculpture")
    with caplog.at_level(logging.INFO):
        dm = _dm(root, tmp_path, val_fraction=0.25, test_fraction=0.25)
        dm.setup()
    assert dm.classes == ["drawings", "painting"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("sculpture" in m and "broken symbolic link" in m for m in messages if m.startswith("Data: "))
    assert any(r.levelno == logging.WARNING and "sculpture" in r.getMessage() for r in caplog.records)


def test_val_root_labels_follow_class_names(tmp_path):
    root = _folder(tmp_path / "train", classes=("drawings", "painting", "sculpture"))
    val = _folder(tmp_path / "val", classes=("painting", "sculpture"), per_class=2)  # no drawings: a subset
    dm = _dm(root, tmp_path, val_root=str(val), test_fraction=0)
    dm.setup()
    labels = sorted(label for _, label, _ in (dm.datasets["val"][i] for i in range(len(dm.datasets["val"]))))
    assert labels == [1, 1, 2, 2]  # painting=1, sculpture=2 as in data.root, not 0 and 1 of val's own list


def test_val_root_with_a_class_that_root_lacks_is_refused(tmp_path):
    root = _folder(tmp_path / "train")
    val = _folder(tmp_path / "val", classes=("painting", "iconography"), per_class=2)
    with pytest.raises(UserError, match=r"data.val_root has class folders that data.root lacks: \['iconography'\]"):
        _dm(root, tmp_path, val_root=str(val)).setup()


@pytest.mark.parametrize("how", ["the same folder", "a symlink to it", "hard links", "a linked class folder"])
def test_a_validation_folder_sharing_files_with_data_root_is_refused(tmp_path, how):
    """Held-out scores of training images measure memory: the same files reached by any path are refused."""
    root = _folder(tmp_path / "train")
    val = tmp_path / "val"
    if how == "the same folder":
        val = root
    elif how == "a symlink to it":
        val.symlink_to(root, target_is_directory=True)
    elif how == "hard links":
        _folder(val, per_class=1)
        os.unlink(val / "painting" / "0.jpg")
        os.link(root / "painting" / "3.jpg", val / "painting" / "0.jpg")  # one shared file among distinct ones
    else:
        val.mkdir()
        (val / "painting").symlink_to(root / "painting", target_is_directory=True)
    with pytest.raises(UserError, match=r"data.val_root: \d+ of its \d+ image files are data.root's too"):
        _dm(root, tmp_path, val_root=str(val)).setup()
    distinct = _folder(tmp_path / "distinct", per_class=1)
    _dm(root, tmp_path, val_root=str(distinct)).setup()  # byte-equal copies are other files: contents are not compared


@pytest.mark.parametrize(("name", "head", "known"), [
    ("photo.jpg", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
    ("photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
    ("scan.jpg", b"\xff\x0a\xfa\x7f\x00\x00", "JPEG XL"),
])
def test_heic_and_other_known_formats_are_named(tmp_path, name, head, known):
    root = _folder(tmp_path / "art")
    (root / "painting" / name).write_bytes(head + bytes(200))
    _dm(root, tmp_path, val_fraction=0.25, test_fraction=0.25).setup()
    rows = _report_rows(tmp_path)
    assert [(os.path.basename(r["path"]), r["reason"]) for r in rows] == [(name, "unsupported")]
    assert rows[0]["detail"] == f"unsupported format {known} (convert to JPEG/PNG)"


def test_data_root_that_is_a_file_says_so(tmp_path):
    root = _folder(tmp_path / "art")
    with pytest.raises(UserError, match=r"is a file, not a folder.*data.root=.*art'"):
        _dm(root / "painting" / "0.jpg", tmp_path).setup()


def test_a_folder_of_truncated_downloads_stops_before_training_with_the_report(tmp_path):
    root = tmp_path / "art"
    (root / "painting").mkdir(parents=True)
    for i in range(6):
        whole = jpeg_bytes(pattern(120, 90, seed=i))
        (root / "painting" / f"{i}.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    dm = _dm(root, tmp_path)
    with pytest.raises(UserError, match="None of the 6 image files"):
        dm.setup()
    assert {row["reason"] for row in _report_rows(tmp_path)} == {"truncated"}
