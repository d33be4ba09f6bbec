"""The fused ReLU/BatchNorm/max-pool blocks against PyTorch's own modules, and the C kernels' build cache.

Every comparison runs the same block twice from one state: ``fused=False`` (PyTorch's modules, the reference) and
``fused=True``; the fused path is recognised by its autograd node (``ReluBatchNormBackward``).
"""

from __future__ import annotations

import copy
import logging
import os
import stat

import pytest
import torch
from torch import nn

from art_diffusion.nets import ConvDiffusionModel
from art_diffusion.nets import fused_kernels as kernels
from art_diffusion.nets.fused_blocks import FusedBlock

needs_kernels = pytest.mark.skipif(kernels.compiler() is None, reason="no C compiler: the blocks run PyTorch's ops")


def block(pool: bool, cin: int = 5, cout: int = 12, seed: int = 0) -> FusedBlock:
    """A block with a third of its BatchNorm scales negative (the pool must then take the min)."""
    torch.manual_seed(seed)
    modules = [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout)]
    b = FusedBlock(*modules, *([nn.MaxPool2d(2)] if pool else []), fused=False)
    with torch.no_grad():
        b[2].weight.uniform_(0.5, 2.0).mul_(torch.tensor([-1.0, 1.0, 1.0]).repeat(cout // 3))
        b[2].bias.uniform_(-1, 1)
    return b.to(memory_format=torch.channels_last)


def pair(pool: bool, **kwargs) -> tuple[FusedBlock, FusedBlock]:
    reference = block(pool, **kwargs)
    fused = copy.deepcopy(reference)
    fused.fused = True
    return reference, fused


def nhwc(*shape) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def run(b: FusedBlock, x: torch.Tensor, grad: torch.Tensor, bf16: bool):
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = b(x)
    out.backward(grad.to(out.dtype))
    grads = [x.grad, *(p.grad for p in b.parameters())]
    return out, grads


def nodes(out: torch.Tensor) -> list[str]:
    """The names of the autograd nodes behind ``out``."""
    seen, todo, names = set(), [out.grad_fn], []
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        todo += [next_fn for next_fn, _ in fn.next_functions]
    return names


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error in norm: a few bf16 ulps stay below 1e-2, a wrong term does not."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@needs_kernels
@pytest.mark.parametrize("pool", [True, False], ids=["relu-bn-pool", "relu-bn"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_training_step_equals_pytorchs_modules(pool, bf16):
    reference, fused = pair(pool)
    x = nhwc(4, 5, 16, 12)
    grad = torch.randn(4, 12, *((8, 6) if pool else (16, 12)))
    truth = copy.deepcopy(reference)
    for step in range(2):  # the second step runs on the running statistics the first one updated
        out_ref, grads_ref = run(reference, x + step, grad, bf16)
        out, grads = run(fused, x + step, grad, bf16)
        _, grads_exact = run(truth, x + step, grad, False)
        assert type(out.grad_fn).__name__ == "ReluBatchNormBackward"
        assert out.dtype == out_ref.dtype and out.shape == out_ref.shape
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert rel(out, out_ref) < (1e-2 if bf16 else 1e-5)
        for g, g_ref, g_exact in zip(grads, grads_ref, grads_exact):  # input, conv weight, bias, BN weight, bias
            if bf16:  # no further from fp32's than PyTorch's bf16 gradients
                assert rel(g, g_exact) <= 1.25 * rel(g_ref, g_exact) + 0.01
            else:
                assert rel(g, g_ref) < 1e-5
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.allclose(getattr(fused[2], name).double(), getattr(reference[2], name).double(),
                                  rtol=1e-5, atol=1e-6), name
        for p in (*reference.parameters(), *fused.parameters(), *truth.parameters()):
            p.grad = None


@needs_kernels
def test_momentum_none_keeps_the_cumulative_average():
    reference, fused = pair(True)
    for b in (reference, fused):
        b[2].momentum = None
    for step in range(3):
        x = nhwc(2, 5, 8, 8) * (step + 1)
        reference(x)
        fused(x)
    assert torch.allclose(fused[2].running_mean, reference[2].running_mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(fused[2].running_var, reference[2].running_var, rtol=1e-5, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("pool", [True, False], ids=["relu-bn-pool", "relu-bn"])
def test_eval_without_autograd_uses_the_running_statistics(pool):
    reference, fused = pair(pool)
    for _ in range(2):
        x = nhwc(3, 5, 8, 10)
        reference(x), fused(x)
    reference.eval(), fused.eval()
    x = nhwc(3, 5, 8, 10)
    with torch.no_grad():
        assert torch.allclose(fused(x), reference(x), rtol=1e-5, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(fused(x), reference(x))  # the max of rounded values is the rounded max
    with torch.enable_grad():  # autograd in eval mode: PyTorch's modules
        assert type(fused(x.requires_grad_()).grad_fn).__name__ != "ReluBatchNormBackward"


@needs_kernels
def test_nan_propagates_as_in_pytorch():
    reference, fused = pair(True)
    x = nhwc(2, 5, 8, 8)
    x[0, :, 3, 3] = float("nan")
    out_ref, out = reference(x), fused(x)
    assert torch.equal(out.isnan(), out_ref.isnan()) and out.isnan().any()


@needs_kernels
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_network_trains_the_same_with_and_without_fusing(seed):
    """fp32: no further from float64 than PyTorch's fp32. bf16 autocast: its gradients stray from fp32's by 10-60 %
    on a tiny random net, fused or not; fusing may not stray further (it rounds once where PyTorch rounds between
    ops, and a pool tie can route a gradient to the other element)."""
    torch.manual_seed(seed)
    nets = {f: ConvDiffusionModel(base_channels=8, fused=f).to(memory_format=torch.channels_last) for f in (0, 1)}
    nets[1].load_state_dict(nets[0].state_dict())  # same keys, same parameters
    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(4, 3, 32, 32)
    fp32 = {f: run(copy.deepcopy(net), x, grad, False) for f, net in nets.items()}
    bf16 = {f: run(copy.deepcopy(net), x, grad, True) for f, net in nets.items()}
    assert nodes(fp32[1][0]).count("ReluBatchNormBackward") == 5 and "ReluBatchNormBackward" not in nodes(fp32[0][0])
    # fp32: BatchNorm's backward cancels most of a gradient on 4 images, so fp32 rounding alone moves a gradient by
    # up to 1e-3 of its norm; the truth is float64 (PyTorch's modules: fusing runs fp32 and bf16 only)
    exact = run(copy.deepcopy(nets[0]).double(), x.double(), grad.double(), False)
    assert rel(fp32[1][0], exact[0]) < 1e-5
    for fused, native, truth in zip(fp32[1][1], fp32[0][1], exact[1]):
        assert rel(fused, truth) <= 2 * rel(native, truth) + 1e-5
    truth = fp32[0][1]
    assert rel(bf16[1][0], fp32[0][0]) < 1e-2
    for fused, native, exact in zip(bf16[1][1], bf16[0][1], truth):
        assert rel(fused, exact) <= 1.25 * rel(native, exact) + 0.01


def test_the_parameters_and_state_dict_do_not_depend_on_fusing():
    keys = {f: list(ConvDiffusionModel(fused=f).state_dict()) for f in (True, False)}
    assert keys[True] == keys[False]
    assert sum(p.numel() for p in ConvDiffusionModel(fused=True).parameters()) == 742_659


@needs_kernels
@pytest.mark.parametrize("case", ["nchw", "hooked", "odd-side", "sync-bn", "fused-false", "float64"])
def test_where_fusing_does_not_apply_pytorchs_modules_run(case):
    b = block(True)
    b.fused = case != "fused-false"
    x = nhwc(2, 5, 8, 8)
    if case == "nchw":
        b, x = b.to(memory_format=torch.contiguous_format), x.contiguous()
    elif case == "hooked":
        seen = []
        b[2].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    elif case == "odd-side":
        x = nhwc(2, 5, 9, 8)
    elif case == "float64":
        b, x = b.double(), x.double()
    elif case == "sync-bn":
        b = nn.SyncBatchNorm.convert_sync_batchnorm(b)
        assert isinstance(b, FusedBlock) and type(b[2]) is nn.SyncBatchNorm
        b.eval()  # SyncBatchNorm trains on CUDA only; in eval it is a BatchNorm, but not the plain one
    out = b(x.requires_grad_()) if case != "sync-bn" else b(x)
    assert type(out.grad_fn).__name__ != "ReluBatchNormBackward"
    if case == "hooked":
        assert seen == [(2, 12, 8, 8)]


def test_an_unbatched_image_gets_pytorchs_own_error():
    b = block(True)
    b.fused = True
    with pytest.raises(ValueError, match="expected 4D input"):
        b(torch.randn(5, 8, 8))


def test_a_machine_without_a_compiler_trains_with_pytorchs_ops_after_one_warning(monkeypatch, caplog):
    monkeypatch.setenv("CC", "no-such-compiler")
    kernels.library.cache_clear()
    try:
        reference, fused = pair(True)
        x = nhwc(2, 5, 8, 8)
        with caplog.at_level(logging.WARNING):
            out = fused(x.requires_grad_())
            fused(x)
        assert sum("cannot be built" in r.getMessage() for r in caplog.records) == 1
        assert "no C compiler (no-such-compiler)" in caplog.text and "model.net.fused=false" in caplog.text
        assert type(out.grad_fn).__name__ != "ReluBatchNormBackward"
        assert torch.equal(out, reference(x))
    finally:
        kernels.library.cache_clear()


def test_a_compiler_that_fails_is_reported_with_its_words(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo fake 1.0; exit 0; fi\n"
                    "echo 'fused_bn.c:1: error: broken' >&2; exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    kernels.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            assert kernels.library() is None
        assert "error: broken" in caplog.text
        assert list((tmp_path / "cache" / "kernels").iterdir()) == []  # no half-written library left behind
    finally:
        kernels.library.cache_clear()


@needs_kernels
def test_the_library_is_built_once_then_loaded_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(tmp_path))
    assert not isinstance(kernels._build(), str)
    directory = tmp_path / "kernels"
    (built,) = directory.iterdir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    first = built.stat()
    assert not isinstance(kernels._build(), str)
    assert built.stat().st_ino == first.st_ino and built.stat().st_mtime_ns == first.st_mtime_ns


@needs_kernels
@pytest.mark.parametrize("damage", ["garbage", "group-writable"])
def test_a_damaged_or_writable_cached_library_is_built_again(monkeypatch, tmp_path, damage):
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(tmp_path))
    cc = kernels.compiler()
    built = tmp_path / "kernels" / f"fused_bn-{kernels.build_key(cc)}.so"
    built.parent.mkdir(mode=0o700)
    if damage == "garbage":  # what a crash of another tool could leave
        built.write_bytes(b"not an ELF file")
    else:  # a real library, but one others could have rewritten
        kernels._compile(cc, built)
        built.chmod(0o664)
    before = built.stat().st_ino
    lib = kernels._build()
    assert not isinstance(lib, str) and hasattr(lib, "relu_stats_bf16")
    assert built.stat().st_ino != before and built.stat().st_size > 1000


@needs_kernels
@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's needs root")
def test_a_cache_directory_of_another_user_is_not_trusted(monkeypatch, tmp_path):
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(tmp_path))
    directory = tmp_path / "kernels"
    directory.mkdir(mode=0o777)
    os.chown(directory, 65534, 65534)  # nobody: whatever it holds could be anyone's code
    lib = kernels._build()
    assert not isinstance(lib, str) and hasattr(lib, "pool_backward_f32")
    assert list(directory.iterdir()) == []  # built privately, elsewhere, and nothing written into that directory
