"""The target-feature store (data.feature_store): built once beside the pixel cache, reused, rebuilt when stale or
damaged, equal to computing the targets each step, off with hflip; and a real training run that uses it."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from art_diffusion.data import ArtDataModule
from art_diffusion.data.feature_store import FeatureSpec
from art_diffusion.losses import HybridLoss
from art_diffusion.run.train import train
from tests.helpers.messy_folder import pattern

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


def _image_folder(root, per_class=5):
    rng = np.random.default_rng(0)
    for name in ("drawings", "painting"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    (root / "painting" / "broken.png").write_bytes(b"<html>not an image</html>")  # a bad row is never served
    return root


def _dm(root, tmp_path, **kwargs) -> ArtDataModule:
    defaults = {"image_size": 32, "batch_size": 4, "num_workers": 0, "cache": True, "feature_store": "auto",
                "val_fraction": 0.2,
                "test_fraction": 0, "cache_dir": str(tmp_path / "cache"), "report_dir": str(tmp_path / "run")}
    dm = ArtDataModule(str(root), **{**defaults, **kwargs})
    dm.setup()
    return dm


def _loss() -> HybridLoss:
    loss = HybridLoss(vgg_weights="random", vgg_layers=9)  # through relu2_2: small and quick
    loss.perceptual.build()
    return loss


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _spec(loss: HybridLoss, **identity) -> FeatureSpec:
    """What ReconstructionModule offers, in bf16 autocast as a bf16-mixed Trainer runs the step."""

    def extract(images):
        with _autocast():
            return loss.perceptual.target_features(loss.normalize(images))

    return FeatureSpec(extract, {**loss.perceptual.identity(), "precision": "bf16-mixed", **identity}, exact=True)


def _feature_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache" / "features").glob("*.npy"))


def test_store_is_built_once_reused_and_rebuilt_when_files_or_image_size_change(tmp_path, caplog):
    root, loss = _image_folder(tmp_path / "art"), _loss()
    with caplog.at_level(logging.INFO, logger="art_diffusion.data.datamodule"):
        first = _dm(root, tmp_path)
        assert first.attach_target_features(_spec(loss))
    assert "on, built in" in caplog.text and first.datasets["train"].features == str(first.feature_path)
    built = first.feature_path.stat().st_mtime_ns

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="art_diffusion.data.datamodule"):
        again = _dm(root, tmp_path)
        assert again.attach_target_features(_spec(loss))
    assert again.feature_path == first.feature_path and "on, reused" in caplog.text
    assert first.feature_path.stat().st_mtime_ns == built  # not written again

    changed = root / "drawings" / "0.png"
    pattern(40, 40, seed=9).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    rebuilt = _dm(root, tmp_path)
    assert rebuilt.attach_target_features(_spec(loss))
    assert rebuilt.feature_path != first.feature_path
    # row 0 (drawings/0.png) holds the new image's features
    row = np.load(rebuilt.feature_path)[0]
    pixels = torch.from_numpy(np.load(rebuilt.store.path)[0:1].copy()).float() / 255
    expected = _spec(loss).extract(pixels)[0].to(torch.bfloat16).permute(1, 2, 0)
    assert torch.equal(torch.from_numpy(row.copy()).view(torch.bfloat16), expected)

    other_size = _dm(root, tmp_path, image_size=24)
    assert other_size.attach_target_features(_spec(loss))
    assert other_size.feature_path not in (first.feature_path, rebuilt.feature_path)
    assert np.load(other_size.feature_path).shape[1:3] == (12, 12)  # relu2_2 of 24 px: one max-pool

    other_weights = _dm(root, tmp_path)
    assert other_weights.attach_target_features(_spec(loss, weights="other"))
    assert other_weights.feature_path != rebuilt.feature_path


def test_training_loss_with_the_store_equals_computing_the_targets(tmp_path):
    root, loss = _image_folder(tmp_path / "art"), _loss()
    dm = _dm(root, tmp_path)
    assert dm.attach_target_features(_spec(loss))
    images, _, features = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert features.dtype == torch.bfloat16 and features.is_contiguous(memory_format=torch.channels_last)
    output = (images + 0.1 * torch.randn_like(images)).clamp(0, 1).requires_grad_()
    results = []
    for stored in (None, features):
        with _autocast():
            parts = loss(output, images, stored)
        (grad,) = torch.autograd.grad(parts["loss"], output)
        results.append((parts, grad))
    (computed, grad_computed), (read, grad_read) = results
    for name in ("loss", "mse", "perceptual"):
        torch.testing.assert_close(read[name], computed[name], rtol=1e-2, atol=0)  # bf16 tolerance
    torch.testing.assert_close(grad_read, grad_computed, rtol=2e-2, atol=1e-6)
    # validation keeps computing its targets: its batches carry no stored features
    assert len(dm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0)) == 2


def test_hflip_turns_the_store_off_and_says_so(tmp_path, caplog):
    root, loss = _image_folder(tmp_path / "art"), _loss()
    with caplog.at_level(logging.INFO, logger="art_diffusion.data.datamodule"):
        dm = _dm(root, tmp_path, hflip=True)
        assert not dm.attach_target_features(_spec(loss))
    assert "Target-feature store (data.feature_store=auto): off, data.hflip=true" in caplog.text
    assert dm.datasets["train"].features is None and not (tmp_path / "cache" / "features").exists()
    assert len(dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)) == 2


def test_store_off_without_the_pixel_cache_or_bf16_or_when_asked(tmp_path, caplog):
    root, loss = _image_folder(tmp_path / "art"), _loss()
    fp32 = FeatureSpec(_spec(loss).extract, {"precision": "32-true"}, exact=False)
    with caplog.at_level(logging.INFO, logger="art_diffusion.data.datamodule"):
        assert not _dm(root, tmp_path, cache=False).attach_target_features(_spec(loss))
        assert not _dm(root, tmp_path).attach_target_features(fp32)
        assert not _dm(root, tmp_path, feature_store=False).attach_target_features(_spec(loss))
    assert "off, the pixel cache is off" in caplog.text and "off, training is not in bf16 (32-true)" in caplog.text
    assert _dm(root, tmp_path, feature_store=True).attach_target_features(fp32)  # true: stored all the same


@pytest.mark.parametrize("damage", ["truncate", "header", "manifest"])
def test_a_damaged_store_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    root, loss = _image_folder(tmp_path / "art"), _loss()
    first = _dm(root, tmp_path)
    first.attach_target_features(_spec(loss))
    path, good = first.feature_path, np.load(first.feature_path).copy()
    if damage == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "header":
        path.write_bytes(b"\x00" * 64 + path.read_bytes()[64:])
    else:
        path.with_suffix(".json").write_text("{not json")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = _dm(root, tmp_path)
        assert again.attach_target_features(_spec(loss))
    assert again.feature_path == path and "on, built in" in caplog.text
    if damage != "manifest":
        assert "is damaged or truncated" in caplog.text
    np.testing.assert_array_equal(np.load(path), good)
    images, _, features = again.on_before_batch_transfer(next(iter(again.train_dataloader())), 0)
    assert features.shape[0] == images.shape[0]


def test_training_runs_on_the_store(compose_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        metrics = train(compose_cfg("data.feature_store=true"))
    assert "Target-feature store (data.feature_store=True): on, built in" in caplog.text
    assert np.isfinite(metrics["val/loss"])


def test_an_unwritable_store_dir_turns_auto_off_and_refuses_true_in_one_message(tmp_path, caplog):
    from art_diffusion import DataError

    root, loss = _image_folder(tmp_path / "art"), _loss()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "features").write_text("a file where the store's directory goes")  # unwritable, even by root
    with caplog.at_level(logging.INFO, logger="art_diffusion.data.datamodule"):
        assert not _dm(root, tmp_path, feature_store="auto").attach_target_features(_spec(loss))
    assert "Target-feature store (data.feature_store=auto): off, " in caplog.text
    assert "features cannot be written" in caplog.text
    with pytest.raises(DataError, match="data.feature_store=true needs a writable"):
        _dm(root, tmp_path, feature_store=True).attach_target_features(_spec(loss))
