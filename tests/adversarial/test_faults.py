"""Fault injection at the writes of a run (issue 23, classes 3 and 7): a full disk (a small tmpfs) and read-only
file systems (a read-only tmpfs) under the cache, the run dir and a tool's output_dir. Each fault must end in one
``error:`` line naming the place and the fix (exit 2), or in a run without the cache and one warning where nothing
must be cached; never a traceback, SIGBUS, or a partial file left behind.

Mounting needs root (CI containers run as root); elsewhere these tests skip, saying so.
"""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers.config import REPO
from tests.helpers.scripts import script_env

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


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


def _script(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=cwd,
                          env={**script_env(), "OMP_NUM_THREADS": "1", **(env or {})},
                          capture_output=True, text=True, timeout=300)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


# --- class 7: a run dir / output_dir on a read-only file system ----------------------------------------------------

def test_the_run_dir_callback_refuses_a_read_only_place_in_one_line(tmp_path, capsys):
    from art_diffusion.run.cli import WritableRunDir

    with mounted(tmp_path / "ro", read_only=True) as ro:
        for key, config in (("hydra.run.dir", {"run": {"dir": str(ro / "run")}}),
                            ("hydra.sweep.dir", {"sweep": {"dir": str(ro / "sweep")}})):
            with pytest.raises(SystemExit) as stop:
                hook = WritableRunDir().on_run_start if key == "hydra.run.dir" else WritableRunDir().on_multirun_start
                hook(OmegaConf.create({"hydra": config}))
            assert stop.value.code == 2
            (line,) = capsys.readouterr().err.strip().splitlines()
            assert line.startswith(f"error: cannot create the output directory {ro}") and "Read-only" in line
    WritableRunDir().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "rw" / "run")}}}))
    assert (tmp_path / "rw" / "run").is_dir()


@pytest.mark.slow  # starts the scripts
def test_train_and_the_tools_on_a_read_only_file_system_say_so_in_one_line(tmp_path):
    with mounted(tmp_path / "ro", read_only=True) as ro:
        line = _one_error_line(_script("train.py", "experiment=demo", f"hydra.run.dir={ro / 'run'}", cwd=tmp_path))
        assert "Read-only file system" in line and "hydra.run.dir=DIR" in line
        line = _one_error_line(_script("reconstruct.py", "ckpt_path=x.ckpt", "input=x.png",
                                       f"output_dir={ro / 'out'}", cwd=tmp_path))
        assert "Read-only file system" in line and "output_dir=DIR" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]
