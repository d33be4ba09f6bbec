"""The ConvDiffusionModel's Conv -> ReLU -> BatchNorm (-> 2x2 MaxPool) blocks with the elementwise part fused.

:class:`FusedBlock` is the block as it was (an ``nn.Sequential`` of PyTorch modules, so parameters, state-dict keys,
``SyncBatchNorm`` conversion and checkpoints are unchanged): it runs the convolution with PyTorch, and the rest in
:mod:`fused_kernels`' C passes where they apply: CPU, channels-last, float32 or bfloat16, a plain ``BatchNorm2d``.
Anywhere else (CUDA, NCHW, ``SyncBatchNorm``, hooks on those modules, tracing, export, ``torch.compile``, no
compiler) it runs the modules. In eval mode without autograd the fused pass uses the running statistics.

Training keeps BatchNorm's batch statistics and updates the running ones as ``nn.BatchNorm2d`` does; the max-pool
runs before BatchNorm's affine map, which commutes with it (the max of an increasing map is the map of the max; a
negative scale takes the min), so the outputs are PyTorch's up to float rounding of the statistics. Forward: two
passes over the full-resolution activation instead of five and int64 indices; backward: two instead of about ten.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from art_diffusion.nets import fused_kernels as kernels


class FusedBlock(nn.Sequential):
    """``Conv -> ReLU -> BatchNorm2d [-> MaxPool2d(2)]`` as an ``nn.Sequential`` (same children, same state-dict keys,
    hooks on the block fire as before) whose ReLU, BatchNorm and pool run fused where :func:`fusable` allows."""

    def __init__(self, *modules: nn.Module, fused: bool = True) -> None:
        super().__init__(*modules)
        self.fused = fused

    def forward(self, x: Tensor) -> Tensor:
        if not self.fused:
            return super().forward(x)
        conv, *rest = self
        y = conv(x)
        if not fusable(y, rest):
            for module in rest:
                y = module(y)
            return y
        bn, pool = rest[1], len(rest) == 3
        if bn.training:
            return ReluBatchNorm.apply(y, bn.weight, bn.bias, bn, pool)
        with torch.no_grad():
            return _inference(y, bn, pool)


def fusable(y: Tensor, rest: list[nn.Module]) -> bool:
    """ReLU -> BatchNorm2d [-> MaxPool2d(2)] on a CPU channels-last tensor, outside tracing and compiling, with no
    hook on those modules (a hook sees what PyTorch's modules compute, so they run)."""
    if len(rest) not in (2, 3) or type(rest[0]) is not nn.ReLU or type(rest[1]) is not nn.BatchNorm2d:
        return False
    if y.dim() != 4:
        return False  # an unbatched image: PyTorch's BatchNorm2d says what it needs
    if _hooked(rest):
        return False
    bn = rest[1]
    if not (bn.affine and bn.track_running_stats) or (not bn.training and y.requires_grad and torch.is_grad_enabled()):
        return False
    n, c, h, w = y.shape
    if len(rest) == 3:
        pool = rest[2]
        if not (type(pool) is nn.MaxPool2d and _pair(pool.kernel_size) == (2, 2) and _pair(pool.stride) == (2, 2)
                and _pair(pool.padding) == (0, 0) and _pair(pool.dilation) == (1, 1) and not pool.ceil_mode
                and not pool.return_indices and h % 2 == 0 and w % 2 == 0):
            return False
    if bn.training and n * h * w < 2:
        return False  # PyTorch's own error: "Expected more than 1 value per channel when training"
    if (y.device.type != "cpu" or y.dtype not in kernels.SUFFIX or bn.weight.dtype != torch.float32
            or not y.is_contiguous(memory_format=torch.channels_last) or y.numel() == 0):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if torch.onnx.is_in_onnx_export():
        return False
    return kernels.library() is not None


def _hooked(modules: list[nn.Module]) -> bool:
    from torch.nn.modules import module as registry

    if registry._global_forward_hooks or registry._global_forward_pre_hooks or registry._global_backward_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in modules)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _rows(t: Tensor) -> tuple[int, int]:
    n, c, h, w = t.shape
    return n * h * w, c


def _fn(name: str, dtype: torch.dtype):
    return getattr(kernels.library(), f"{name}_{kernels.SUFFIX[dtype]}")


def _relu_and_stats(y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ReLU(y) (a new tensor) and its per-channel mean and biased variance (float64)."""
    rows, c = _rows(y)
    r = torch.empty_like(y, memory_format=torch.channels_last)
    origin = y[0, :, 0, 0].float().clamp(min=0).contiguous()  # sums are taken around it: no cancellation
    total, squares = sums = torch.zeros(2, c, dtype=torch.float64)
    _fn("relu_stats", y.dtype)(y.data_ptr(), r.data_ptr(), rows, c, origin.data_ptr(), sums[0].data_ptr(),
                               sums[1].data_ptr())
    shifted_mean = total / rows
    var = (squares / rows - shifted_mean**2).clamp(min=0)
    return r, origin.double() + shifted_mean, var


def _affine_out(r: Tensor, scale: Tensor, shift: Tensor, pool: bool) -> tuple[Tensor, Tensor | None]:
    """The BatchNorm'd (and pooled) output of ReLU output ``r``, and the pooled pre-affine values if pooled."""
    n, c, h, w = r.shape
    if not pool:
        out = torch.empty_like(r, memory_format=torch.channels_last)
        _fn("affine", r.dtype)(r.data_ptr(), out.data_ptr(), n * h * w, c, scale.data_ptr(), shift.data_ptr())
        return out, None
    out = torch.empty(n, c, h // 2, w // 2, dtype=r.dtype).contiguous(memory_format=torch.channels_last)
    pooled = torch.empty_like(out, memory_format=torch.channels_last)
    _fn("pool_affine", r.dtype)(r.data_ptr(), h, w, c, 0, n * (h // 2), scale.data_ptr(), shift.data_ptr(),
                                pooled.data_ptr(), out.data_ptr())
    return out, pooled


def _inference(y: Tensor, bn: nn.BatchNorm2d, pool: bool) -> Tensor:
    """Eval mode: BatchNorm with its running statistics, fused the same way (no gradient)."""
    r, _, _ = _relu_and_stats(y)
    invstd = 1 / torch.sqrt(bn.running_var + bn.eps)
    return _affine_out(r, *_scale_and_shift(bn, bn.running_mean, invstd), pool)[0]


def _scale_and_shift(bn: nn.BatchNorm2d, mean: Tensor, invstd: Tensor) -> tuple[Tensor, Tensor]:
    """BatchNorm as ``x * scale + shift`` (float32), the form PyTorch's CPU kernel applies."""
    scale = (invstd.float() * bn.weight.detach()).contiguous()
    return scale, (bn.bias.detach() - mean.float() * scale).contiguous()


def _update_running_stats(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """What ``nn.BatchNorm2d.forward`` does to its buffers in training."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
        unbiased = var * count / max(count - 1, 1)
        bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)


class ReluBatchNorm(torch.autograd.Function):
    """ReLU -> BatchNorm2d with batch statistics [-> MaxPool2d(2)], forward and backward in fused passes."""

    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor, bias: Tensor, bn: nn.BatchNorm2d, pool: bool) -> Tensor:
        r, mean, var = _relu_and_stats(y)
        count = _rows(y)[0]
        _update_running_stats(bn, mean, var, count)
        invstd = 1 / torch.sqrt(var + bn.eps)
        scale, shift = _scale_and_shift(bn, mean, invstd)
        out, pooled = _affine_out(r, scale, shift, pool)
        ctx.pool, ctx.count = pool, count
        ctx.save_for_backward(r, pooled, mean, invstd, scale)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        r, pooled, mean, invstd, scale = ctx.saved_tensors
        n, c, h, w = r.shape
        g = grad_out.to(r.dtype).contiguous(memory_format=torch.channels_last)
        values = pooled if ctx.pool else r
        mean32 = mean.float()
        sum_g, centered = sums = torch.zeros(2, c, dtype=torch.float64)
        _fn("dot_sums", r.dtype)(g.data_ptr(), values.data_ptr(), _rows(g)[0], c, mean32.data_ptr(),
                                 sums[0].data_ptr(), sums[1].data_ptr())
        a = (-scale * sum_g / ctx.count).float()
        b = (-scale * invstd**2 * centered / ctx.count).float()
        scale32 = scale.float()
        grad_y = torch.empty_like(r, memory_format=torch.channels_last)
        if ctx.pool:
            _fn("pool_backward", r.dtype)(r.data_ptr(), g.data_ptr(), h, w, c, 0, n * (h // 2), scale32.data_ptr(),
                                          a.data_ptr(), b.data_ptr(), mean32.data_ptr(), grad_y.data_ptr())
        else:
            _fn("affine_backward", r.dtype)(r.data_ptr(), g.data_ptr(), n * h * w, c, scale32.data_ptr(), a.data_ptr(),
                                            b.data_ptr(), mean32.data_ptr(), grad_y.data_ptr())
        grad_weight = (centered * invstd).float()
        return grad_y, grad_weight, sum_g.float(), None, None
