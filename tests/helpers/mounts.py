"""A fresh tmpfs mounted for one test: a small disk to fill, a read-only file system, or a file system of its own
(as a cluster's scratch disk is not the one holding /tmp). Mounting needs root; the test skips, saying why,
elsewhere."""

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted(path: Path, size: str = "2m", read_only: bool = False):
    """A fresh tmpfs of ``size`` at ``path`` (read-only if asked), unmounted on exit whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                            text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
