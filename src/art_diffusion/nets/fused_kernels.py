"""Our C kernels for the ConvDiffusionModel's elementwise passes (``fused_bn.c``): built once per machine, loaded with
ctypes, run on torch's intra-op threads (the library's OpenMP runtime is the libgomp.so.1 torch has loaded).

Why our own: eager PyTorch runs ReLU, BatchNorm and max-pooling as separate passes over full-resolution activations
(eight of them forward, about ten backward, plus the pool's int64 indices), and on CPU neither ``torch.compile``
(slower than eager for this network, BENCHMARKS.md) nor a oneDNN primitive fuses them for training. A torch C++
extension would need torch's headers and a minute of compiling on first use; ``fused_bn.c`` needs neither: the
system's C compiler (``$CC``, else ``cc``) builds it in about a second into the cache
(``<cache root>/kernels/fused_bn-<key>.so``). The key hashes the source, the compiler's version, the flags and the
CPU (``-march=native`` code must never run on another CPU model sharing a home directory).

The cached library is code we load, so it is trusted only when it is ours: a file owned by this user, not writable
by group or others, in a directory that is neither. Anything else is left alone and the library built afresh in a
private temporary directory. Without a compiler (or with a build that fails) :func:`library` is None after one
warning: the network then runs PyTorch's own ops, same results.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import torch

from art_diffusion.storage.files import atomic_path, optional_cache_dir, optional_write, read_bytes, read_text

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_bn.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
_P, _I64 = ctypes.c_void_p, ctypes.c_int64
SIGNATURES = {  # the C functions (one per dtype suffix) and their argument types
    "relu_stats": [_P, _P, _I64, _I64, _P, _P, _P],
    "pool_affine": [_P, _I64, _I64, _I64, _I64, _I64, _P, _P, _P, _P],
    "affine": [_P, _P, _I64, _I64, _P, _P],
    "dot_sums": [_P, _P, _I64, _I64, _P, _P, _P],
    "pool_backward": [_P, _P, _I64, _I64, _I64, _I64, _I64, _P, _P, _P, _P, _P],
    "affine_backward": [_P, _P, _I64, _I64, _P, _P, _P, _P, _P],
}
SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _cpu() -> str:
    with contextlib.suppress(OSError):
        text = read_text("/proc/cpuinfo", errors="replace")
        wanted = ("model name", "flags", "vendor_id")
        lines = [line for line in text.splitlines(keepends=True) if line.startswith(wanted)]
        return "".join(sorted(set(lines)))
    return platform.processor() or platform.machine()


def build_key(cc: str) -> str:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    parts = [read_bytes(SOURCE), version.encode(), " ".join(FLAGS).encode(), _cpu().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _ours(path: Path) -> bool:
    """``path`` belongs to this user and nobody else can write it."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _compile(cc: str, out: Path) -> None:
    """Builds ``out``; a failed build is a :class:`subprocess.CalledProcessError` carrying the compiler's words."""
    subprocess.run([cc, *FLAGS, "-o", str(out), str(SOURCE)], capture_output=True, text=True, timeout=300,
                   check=True)


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, argtypes in SIGNATURES.items():
        for suffix in SUFFIX.values():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, None
    return lib


def _build() -> ctypes.CDLL | str:
    """The loaded library, or why it cannot be had."""
    cc = compiler()
    if cc is None:
        return f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
    name = f"fused_bn-{build_key(cc)}.so"
    root = optional_cache_dir(what="the compiled kernels")  # one warning per unwritable cache, whoever asks first
    directory = root / "kernels" if root is not None else None
    try:
        if directory is not None:
            directory.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        directory = None
    with contextlib.suppress(OSError):
        if directory is not None and directory.stat().st_uid == os.getuid():
            directory.chmod(0o700)  # ours: nobody else writes into it (never done to another user's directory)
    if directory is not None and _ours(directory):
        path = directory / name
        if _ours(path):
            with contextlib.suppress(OSError, AttributeError):
                return _load(path)  # a damaged file (a disk that filled up long ago) is built again below
        written = False
        with optional_write(f"the compiled kernels {path} (built in a private temporary directory instead)"):
            with atomic_path(path) as tmp:  # a full cache disk costs the cache, not the kernels
                _compile(cc, tmp)
            written = True
        if written:
            return _load(path)
    with tempfile.TemporaryDirectory(prefix="art-diffusion-kernels-") as private:
        path = Path(private) / name
        _compile(cc, path)
        return _load(path)  # the mapping outlives the file


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (after one warning naming why) where they cannot be built or loaded."""
    try:
        lib = _build()
    except subprocess.CalledProcessError as exc:
        lib = f"`{' '.join(exc.cmd)}` failed: {(exc.stderr or '').strip()[-2000:]}"
    except (OSError, AttributeError, subprocess.SubprocessError) as exc:  # AttributeError: a symbol missing
        lib = f"{type(exc).__name__}: {exc}"
    if isinstance(lib, str):
        log.warning("The fused BatchNorm kernels cannot be built (%s): the ConvDiffusionModel runs PyTorch's own "
                    "ReLU/BatchNorm/max-pool ops instead (same results, slower training). Install a C compiler (or "
                    "point $CC at one), or turn fusing off to silence this (model.net.fused=false; "
                    "ConvDiffusionModel(fused=False)).", lib)
        return None
    log.info("Fused BatchNorm kernels loaded (%s).", Path(lib._name).name)
    return lib
