"""Decoding single files: every bad kind refused with its reason, every odd-but-usable kind decoded to correct RGB."""

import os

import numpy as np
import pytest
from PIL import Image, ImageFile

from art_diffusion.data.images import BadImage, check_header, load_rgb
from tests.helpers.messy_folder import LAZY_BAD, make_messy_folder, pattern

LIMITS = {"max_pixels": 50_000_000, "min_size": 32}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    good, bad = make_messy_folder(root)
    paths = {p.name: p for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    return root, good, bad, paths


def _reason(path, **limits) -> str:
    with pytest.raises(BadImage) as info:
        load_rgb(path, 32, **{**LIMITS, **limits})
    return info.value.reason


def test_truncation_is_detected_not_padded():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_every_bad_kind_is_refused_with_its_reason(messy):
    _, _, bad, paths = messy
    assert {name: _reason(paths[name]) for name in bad} == bad


def test_header_check_refuses_all_but_the_damage_inside_the_pixels(messy):
    _, good, bad, paths = messy
    refused = {}
    for name in sorted(good | set(bad)):
        try:
            check_header(paths[name], **LIMITS)
        except BadImage as exc:
            refused[name] = exc.reason
    assert refused == {name: reason for name, reason in bad.items() if name not in LAZY_BAD}


def test_reasons_say_what_is_wrong(messy):
    _, _, _, paths = messy
    with pytest.raises(BadImage, match="HTML page"):
        load_rgb(paths["error_page.jpg"], 32, **LIMITS)
    with pytest.raises(BadImage, match="text file"):
        load_rgb(paths["notes_saved_as.jpg"], 32, **LIMITS)
    with pytest.raises(BadImage, match="100x16 px.*data.min_size=32"):
        load_rgb(paths["thin_strip.png"], 32, **LIMITS)


def test_pixel_limit_is_checked_from_the_header(tmp_path):
    path = tmp_path / "big.png"
    pattern(200, 100).save(path)
    with pytest.raises(BadImage, match=r"200x100 px is more than data.max_pixels=10000") as info:
        load_rgb(path, 32, max_pixels=10_000, min_size=32)
    assert info.value.reason == "too large"
    assert load_rgb(path, 32, max_pixels=20_000, min_size=32).shape == (32, 32, 3)


def test_every_usable_kind_decodes_to_the_requested_rgb_size(messy):
    _, good, _, paths = messy
    for name in good:
        pixels = load_rgb(paths[name], 32, **LIMITS)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8, name


def test_colour_modes_become_the_right_rgb(messy):
    _, _, _, paths = messy
    px = {name: load_rgb(paths[name], 32, **LIMITS).astype(int) for name in
          ("rgba.png", "grey_alpha.png", "palette.png", "grey16.png", "cmyk.jpg", "grey.jpg")}
    for name in ("rgba.png", "palette.png"):  # opaque red left, transparent right: composited on white
        assert np.abs(px[name][:, :12] - (255, 0, 0)).max() <= 2, name
        assert np.abs(px[name][:, -12:] - 255).max() <= 2, name
    assert np.abs(px["grey_alpha.png"][:, :12] - 255).max() <= 2  # grey 255 opaque
    assert np.abs(px["grey16.png"] - 128).max() <= 1  # 16-bit scaled, not clipped to white
    assert np.abs(px["cmyk.jpg"] - (255, 0, 0)).max() <= 8
    grey = px["grey.jpg"]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_exif_orientation_is_applied(messy):
    _, _, _, paths = messy
    pixels = load_rgb(paths["exif_rotated.jpg"], 32, **LIMITS).astype(int)
    # stored: red left, blue right; orientation 6 displays it turned clockwise: red on top, blue below
    assert np.abs(pixels[:8] - (255, 0, 0)).max() < 40
    assert np.abs(pixels[-8:] - (0, 0, 255)).max() < 40


def test_jpeg_draft_mode_matches_a_full_decode(messy):
    _, _, _, paths = messy
    drafted = load_rgb(paths["very_large.jpg"], 64, **LIMITS).astype(int)
    full = np.asarray(Image.open(paths["very_large.jpg"]).convert("RGB").resize((64, 64), Image.BILINEAR)).astype(int)
    assert np.abs(drafted - full).mean() < 6


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_reported(tmp_path):
    path = tmp_path / "locked.jpg"
    pattern(40, 40).save(path)
    path.chmod(0)
    assert _reason(path) == "unreadable"
