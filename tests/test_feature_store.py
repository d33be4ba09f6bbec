"""The target-feature store (data.feature_store): built once beside the pixel cache, reused, rebuilt when stale or
damaged, equal to computing the targets each step, off with hflip; and a real training run that uses it."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from art_diffusion.data import ArtDataModule, row_store
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


def _autocast(precision="bf16-mixed"):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def _spec(loss: HybridLoss, precision="bf16-mixed", **identity) -> FeatureSpec:
    """What ReconstructionModule offers: by default in bf16 autocast as a bf16-mixed Trainer runs the step."""

    def extract(images):
        with _autocast(precision):
            return loss.perceptual.target_features(loss.normalize(images))

    return FeatureSpec(extract, {**loss.perceptual.identity(), "precision": precision, **identity})


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


@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
def test_training_loss_with_the_store_equals_computing_the_targets(tmp_path, precision, dtype):
    root, loss = _image_folder(tmp_path / "art"), _loss()
    dm = _dm(root, tmp_path)
    assert dm.attach_target_features(_spec(loss, precision))  # auto: on in either precision, the step's own dtype
    images, _, features = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert features.dtype == dtype and features.is_contiguous(memory_format=torch.channels_last)
    output = (images + 0.1 * torch.randn_like(images)).clamp(0, 1).requires_grad_()
    results = []
    for stored in (None, features):
        with _autocast(precision):
            parts = loss(output, images, stored)
        (grad,) = torch.autograd.grad(parts["loss"], output)
        results.append((parts, grad))
    (computed, grad_computed), (read, grad_read) = results
    # the same numbers up to the VGG's summation order (a batch of 32 built the store, a batch of 4 here)
    tolerance = {"rtol": 1e-2, "atol": 0} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-7}
    for name in ("loss", "mse", "perceptual"):
        torch.testing.assert_close(read[name], computed[name], **tolerance)
    grad_tolerance = {"rtol": 2e-2, "atol": 1e-6} if dtype == torch.bfloat16 else tolerance
    torch.testing.assert_close(grad_read, grad_computed, **grad_tolerance)
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


def test_store_off_without_the_pixel_cache_or_when_asked(tmp_path, caplog):
    root, loss = _image_folder(tmp_path / "art"), _loss()
    with caplog.at_level(logging.INFO, logger="art_diffusion.data.datamodule"):
        assert not _dm(root, tmp_path, cache=False).attach_target_features(_spec(loss))
        assert not _dm(root, tmp_path, feature_store=False).attach_target_features(_spec(loss))
        integer = FeatureSpec(lambda images: _spec(loss).extract(images).to(torch.int32), {"precision": "int"})
        assert not _dm(root, tmp_path).attach_target_features(integer)
    assert "off, the pixel cache is off" in caplog.text
    assert "off, the step computes its targets in torch.int32, which the store does not keep" in caplog.text
    assert not (tmp_path / "cache" / "features").exists()


def test_each_precision_has_a_store_of_its_own_dtype(tmp_path):
    """A store holds the step's own numbers: fp32 training reads fp32 rows, never a bf16 store's rounded ones."""
    root, loss = _image_folder(tmp_path / "art"), _loss()
    stores = {}
    for precision, on_disk in (("bf16-mixed", np.int16), ("32-true", np.float32)):
        dm = _dm(root, tmp_path)
        assert dm.attach_target_features(_spec(loss, precision))
        stores[precision] = dm.feature_path
        assert np.load(dm.feature_path, mmap_mode="r").dtype == on_disk
    assert stores["bf16-mixed"] != stores["32-true"] and all(p.exists() for p in stores.values())
    assert (np.load(stores["32-true"]).nbytes == 2 * np.load(stores["bf16-mixed"]).nbytes)
    for dtype in (torch.float16, torch.float64):  # a GPU's 16-mixed, 64-true: rows read back as computed
        spec = FeatureSpec(lambda images, dtype=dtype: _spec(loss, "32-true").extract(images).to(dtype),
                           {"precision": str(dtype)})
        dm = _dm(root, tmp_path)
        assert dm.attach_target_features(spec)
        images, _, features = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
        assert features.dtype == dtype


def _replace(path, old: bytes, new: bytes):
    """An edit that keeps the file's length, as a flipped byte or a hand edit does."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1, (old, data[:128])
    path.write_bytes(data.replace(old, new))


RESEAL = "resealed"


def _edit_manifest(path, edit, seal="kept"):
    """``edit(manifest)``, keeping its builder's seal, dropping it (an older version's store) or ``"resealed"`` as
    a builder would seal the edited manifest (another version's builder, say): then the store's ``check`` sees it."""
    manifest = json.loads(path.with_suffix(".json").read_text())
    kept = manifest.pop("seal")
    edit(manifest)
    text = json.dumps(manifest if seal == "dropped" else {"seal": kept, **manifest})
    if seal == RESEAL:
        text = row_store.sealed(path.name, manifest, row_store._header(path)[0])
    path.with_suffix(".json").write_text(text)


def _rows(path) -> tuple[int, int]:
    """(offset of the first row, bytes per row) of a store's .npy file."""
    header, shape, _, dtype = row_store._header(path)
    return len(header), int(np.prod(shape[1:])) * dtype.itemsize


def _flip_bit(path, where: str):
    """One bit of the rows flipped in place, as a failing disk or a stray write does: the file keeps its length."""
    start, row = _rows(path)
    offset = {"first": start, "last": path.stat().st_size - 1, "inside": start + 3 * row + row // 2 + 1}[where]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x10]))


def _swap_rows(path):
    """Rows 1 and 2 exchanged: the same bytes, the wrong image (or target) at each index."""
    start, row = _rows(path)
    data = bytearray(path.read_bytes())
    first, second = data[start + row:start + 2 * row], data[start + 2 * row:start + 3 * row]
    assert first != second
    data[start + row:start + 3 * row] = second + first
    path.write_bytes(bytes(data))


ROWS_DAMAGE = {  # what a sealed manifest and a well-formed header cannot see: the rows themselves
    "a bit flipped in the first row": lambda p: _flip_bit(p, "first"),
    "a bit flipped inside a row": lambda p: _flip_bit(p, "inside"),
    "a bit flipped in the last byte": lambda p: _flip_bit(p, "last"),
    "two rows swapped": _swap_rows,
    "no rows checksum, sealed": lambda p: _edit_manifest(p, lambda m: m.pop("rows_sha256"), RESEAL),
    "another checksum, sealed": lambda p: _edit_manifest(p, lambda m: m.update(rows_sha256="0" * 64), RESEAL),
}


def _another_bad_row(manifest):
    manifest["bad"] = {"0": manifest["bad"].popitem()[1]}  # well-formed: a good row said to be bad


# Damage that leaves the files (mostly) their length: each store must be rebuilt with one warning, never used or a
# traceback. The header lies (C order read as Fortran order, another dtype or byte order, a permuted shape of the
# same size); the manifest is not JSON, not of its form, names other inputs, or was edited well-formed (the seal).
DAMAGE = {
    "pixels": {
        "truncated": lambda p: os.truncate(p, p.stat().st_size // 2),
        "trailing bytes": lambda p: p.write_bytes(p.read_bytes() + b"\0" * 16),
        "header zeroed": lambda p: p.write_bytes(b"\x00" * 64 + p.read_bytes()[64:]),
        "fortran_order": lambda p: _replace(p, b"'fortran_order': False", b"'fortran_order': True "),
        "dtype": lambda p: _replace(p, b"'|u1'", b"'|i1'"),
        "shape permuted": lambda p: _replace(p, b"(11, 3, 32, 32)", b"(32, 3, 11, 32)"),
        "header unparsable": lambda p: _replace(p, b"(11, 3, 32, 32)", b"(11, 3, 32, 32 "),  # numpy: TokenError
        "manifest not json": lambda p: p.with_suffix(".json").write_text("{not json"),
        "manifest a list": lambda p: p.with_suffix(".json").write_text("[]"),
        "manifest empty": lambda p: p.with_suffix(".json").write_text("{}"),
        "manifest gone, rows kept": lambda p: p.with_suffix(".json").unlink(),
        "bad verdict an int": lambda p: _edit_manifest(p, lambda m: m.update(bad={"0": 5})),
        "bad row not a row, sealed": lambda p: _edit_manifest(p, lambda m: m.update(bad={"99": ["a", "b"]}), RESEAL),
        "bad row not a number, sealed": lambda p: _edit_manifest(p, lambda m: m.update(bad={"²": ["a", "b"]}), RESEAL),
        "other files, sealed": lambda p: _edit_manifest(p, lambda m: m["files"].reverse(), RESEAL),
        "another bad row": lambda p: _edit_manifest(p, _another_bad_row),
        "no seal": lambda p: _edit_manifest(p, lambda m: None, "dropped"),
        **ROWS_DAMAGE,
    },
    "features": {
        "fortran_order": lambda p: _replace(p, b"'fortran_order': False", b"'fortran_order': True "),
        "byte order": lambda p: _replace(p, b"'<i2'", b"'>i2'"),
        "manifest empty": lambda p: p.with_suffix(".json").write_text("{}"),
        "other weights": lambda p: _edit_manifest(p, lambda m: m["identity"].update(weights="other")),
        "other pixel store, sealed": lambda p: _edit_manifest(p, lambda m: m.update(pixel_store="x.npy"), RESEAL),
        "a pixel store's manifest": lambda p: p.with_suffix(".json").write_bytes(
            next((p.parent.parent / "pixels").glob("*.json")).read_bytes()),
        **ROWS_DAMAGE,
    },
}


@pytest.fixture(scope="module")
def built_stores(tmp_path_factory):
    """Both stores built once from a folder with a bad file; each test damages a copy of the cache."""
    base = tmp_path_factory.mktemp("stores")
    root, loss = _image_folder(base / "art"), _loss()
    dm = _dm(root, base)
    assert dm.attach_target_features(_spec(loss)) and dm.store.bad  # the broken file has a row in the manifest
    return root, base / "cache", loss, dm.store.bad


@pytest.mark.parametrize("store,damage", [(store, damage) for store, edits in DAMAGE.items() for damage in edits])
def test_a_store_not_as_its_builder_wrote_it_is_rebuilt_with_one_warning(built_stores, tmp_path, caplog, store,
                                                                          damage):
    root, cache, loss, bad = built_stores
    shutil.copytree(cache, tmp_path / "cache")
    (path,) = (tmp_path / "cache" / store).glob("*.npy")
    good = path.read_bytes(), path.with_suffix(".json").read_text()
    DAMAGE[store][damage](path)
    with caplog.at_level(logging.INFO):
        again = _dm(root, tmp_path)
        assert again.attach_target_features(_spec(loss))
    name = {"pixels": "pixel cache", "features": "target-feature store"}[store]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]
    if damage == "manifest gone, rows kept":  # a build killed before its manifest: built again, nothing to warn of
        assert warnings == []
    else:
        assert len(warnings) == 1 and "is damaged or truncated, or not as its builder wrote it" in warnings[0]
    assert f"Built the {name} {path}" in caplog.text
    assert (path.read_bytes(), path.with_suffix(".json").read_text()) == good  # rebuilt as it was
    assert again.store.bad == bad and list(bad) == [10]  # painting/broken.png, and no other row
    images, _, features = again.on_before_batch_transfer(next(iter(again.train_dataloader())), 0)
    assert features.shape[0] == images.shape[0]


@pytest.mark.parametrize("precision, on_disk", [("32-true", np.float32), ("bf16-mixed", np.int16)])
def test_training_runs_on_the_store_in_either_precision(compose_cfg, tmp_path, caplog, precision, on_disk):
    """A real Trainer: auto turns the store on in fp32 and in bf16 training, each with rows of the step's dtype."""
    with caplog.at_level(logging.INFO):
        metrics = train(compose_cfg(f"trainer.precision={precision}", "data.feature_store=auto"))
    assert "Target-feature store (data.feature_store=auto): on, built in" in caplog.text
    (store,) = (tmp_path / "data-cache" / "features").glob("*.npy")  # compose_cfg's data.cache_dir
    assert np.load(store, mmap_mode="r").dtype == on_disk
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


def test_openers_that_find_the_same_damaged_rows_rebuild_the_store_once(tmp_path, caplog, monkeypatch):
    """Rows are hashed outside the slot's lock, so DDP ranks and concurrent runs hash side by side; two openers that
    find the same flipped bit rebuild the store once between them, and both end on the intact one."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from art_diffusion.storage import file_lock

    hash_rows, lock_free = row_store.rows_damage, []

    def hashed_with_the_lock_free(path, manifest):  # the real hash; first, is the slot's lock free meanwhile?
        with file_lock(row_store._slot_lock(path), timeout=0):  # filelock.Timeout if the opener held it
            lock_free.append(True)
        return hash_rows(path, manifest)

    path, shape, builds = tmp_path / "rows" / "slot-content.npy", (64, 8, 8), []
    rows = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    ready = threading.Barrier(2)

    def fill(write):
        builds.append(threading.get_ident())
        write(rows)
        return {"what": "test"}

    def open_store():
        ready.wait()  # both openers start together
        return row_store.open_or_build(path, shape, np.uint8, fill, lambda m: row_store.mismatch(m, {"what": str}),
                                       "test store", "")

    row_store.open_or_build(path, shape, np.uint8, fill, lambda m: None, "test store", "")
    assert len(builds) == 1
    with monkeypatch.context() as patch:  # one opener alone: its hash runs with the slot's lock free
        patch.setattr(row_store, "rows_damage", hashed_with_the_lock_free)
        row_store.open_or_build(path, shape, np.uint8, fill, lambda m: None, "test store", "")
    assert lock_free == [True] and len(builds) == 1  # reused, and its rows hashed once
    _flip_bit(path, "inside")
    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(2) as pool:
        opened = [f.result() for f in [pool.submit(open_store) for _ in range(2)]]
    assert len(builds) == 2  # the first build, then one rebuild for both
    assert [manifest for manifest, _ in opened] == [{"what": "test"}] * 2
    assert caplog.text.count("its rows are not what its builder wrote") == 1
    assert np.array_equal(np.load(path), rows)
