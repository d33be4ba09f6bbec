"""``trainer.precision=auto``: bf16 autocast where the hardware computes in bf16 natively, fp32 elsewhere.

Lightning has no "auto" precision, so the project resolves it before the Trainer is built and stores the result in
the run's config (a resumed run keeps the numerics it started with). On a CPU, bf16 autocast pays off only with
native bf16 arithmetic (AVX512-BF16 or AMX; measured in BENCHMARKS.md); without it, bf16 is
emulated and slower than fp32. On a GPU, bf16 needs compute capability 8.0 or newer (A100, H100, RTX 30xx+).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from art_diffusion.storage import read_text

log = logging.getLogger(__name__)

AUTO = "auto"
#: /proc/cpuinfo flags of x86 CPUs with native bf16 arithmetic (oneDNN uses them for bf16 convolutions).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The native-bf16 flags this CPU reports ([] where there is no /proc/cpuinfo, e.g. macOS)."""
    try:
        text = read_text(cpuinfo)
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def uses_gpu(accelerator: str) -> bool:
    return str(accelerator) in ("gpu", "cuda") or (str(accelerator) == "auto" and torch.cuda.is_available())


def resolve_precision(precision: str, accelerator: str = "auto",
                      cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, str]:
    """``(precision, why)``: ``precision`` itself unless it is ``auto``; then bf16-mixed or 32-true."""
    if str(precision) != AUTO:
        return str(precision), "as configured"
    if uses_gpu(accelerator):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"GPU {torch.cuda.get_device_name()} computes in bf16"
        return "32-true", "no GPU with bf16 support (compute capability < 8.0)"
    flags = cpu_bf16_flags(cpuinfo)
    if flags:
        return "bf16-mixed", f"CPU with native bf16 ({', '.join(flags)})"
    return "32-true", "CPU without native bf16 (no avx512_bf16/amx_bf16 flag)"


def resolve_trainer_precision(cfg: DictConfig) -> None:
    """``cfg.trainer.precision=auto`` -> bf16-mixed or 32-true for this machine, logged, written into ``cfg``."""
    precision, why = resolve_precision(cfg.trainer.precision, cfg.trainer.get("accelerator", "auto"))
    if precision != str(cfg.trainer.precision):
        log.info("Precision: trainer.precision=%s -> %s (%s); trainer.precision=32-true gives the article's fp32",
                 cfg.trainer.precision, precision, why)
        with open_dict(cfg):
            cfg.trainer.precision = precision
