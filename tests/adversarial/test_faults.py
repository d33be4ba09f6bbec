"""Fault injection at the writes of a run (issue 23, classes 3 and 7): a full disk (a small tmpfs) and read-only
file systems (a read-only tmpfs) under the cache, the run dir and a tool's output_dir. Each fault must end in one
``error:`` line naming the place and the fix (exit 2), or in a run without the cache and one warning where nothing
must be cached; never a traceback, SIGBUS, or a partial file left behind.

Mounting needs root (CI containers run as root); elsewhere these tests skip, saying so.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers.mounts import mounted
from tests.helpers.scripts import run_script, script_env

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


def _script(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_script(name.removesuffix(".py"), *args, cwd=cwd, env=env)


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


@pytest.mark.slow  # runs the scripts
def test_train_and_the_tools_on_a_read_only_file_system_say_so_in_one_line(tmp_path):
    with mounted(tmp_path / "ro", read_only=True) as ro:
        line = _one_error_line(_script("train.py", "experiment=demo", f"hydra.run.dir={ro / 'run'}", cwd=tmp_path))
        assert "Read-only file system" in line and "hydra.run.dir=DIR" in line
        line = _one_error_line(_script("reconstruct.py", "ckpt_path=x.ckpt", "input=x.png",
                                       f"output_dir={ro / 'out'}", cwd=tmp_path))
        assert "Read-only file system" in line and "output_dir=DIR" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]


# --- class 3: faults while building caches ---------------------------------------------------------------------------

def _image_folder(root: Path, per_class: int = 8, classes=("drawings", "painting")) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (70, 70, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _datamodule(root: Path, cache_dir: Path, tmp_path: Path, **kwargs):
    from art_diffusion.data.datamodule import ArtDataModule

    settings = {"image_size": 32, "batch_size": 4, "num_workers": 0, "cache": False, "cache_dir": str(cache_dir),
                "report_dir": str(tmp_path / "run"), **kwargs}
    return ArtDataModule(str(root), **settings)


def test_a_pixel_cache_too_large_for_the_disk_is_refused_with_real_numbers(tmp_path):
    from art_diffusion.storage import DiskFullError

    root = _image_folder(tmp_path / "art", per_class=100)  # 200 x 3 x 64 x 64 = 2.5 MB, on a 2 MB disk
    with mounted(tmp_path / "small") as small:
        with pytest.raises(DiskFullError) as refused:
            _datamodule(root, small, tmp_path, cache=True, image_size=64).setup("fit")
        message = str(refused.value)
        assert "needs 2.5 MB (+10% margin)" in message and "MB free" in message and "0.0 MB" not in message
        assert "data.cache=false" in message
        assert [p.name for p in (small / "pixels").iterdir()] == [p.name for p in (small / "pixels").glob("*.lock")]


_FILL_DURING_BUILD = """
import sys
from pathlib import Path
from art_diffusion.data import pixel_cache, row_store
from art_diffusion.data.listing import list_image_folder
# the disk fills up after the start-up check (another process writes there): the check is skipped here
row_store.check_disk = lambda *args: None
files = list_image_folder(sys.argv[1]).files
path = pixel_cache.store_path(Path(sys.argv[2]), [sys.argv[1]], files, 64, 50_000_000, 32)
pixel_cache.open_or_build(path, files, 64, 50_000_000, 32, workers=0)
"""


@pytest.mark.slow  # starts a process (on main it dies of SIGBUS, which would take pytest with it)
def test_a_disk_that_fills_during_the_pixel_cache_build_is_one_error_and_no_partial_file(tmp_path):
    root = _image_folder(tmp_path / "art", per_class=100)
    with mounted(tmp_path / "small") as small:
        result = subprocess.run([sys.executable, "-c", _FILL_DURING_BUILD, str(root), str(small)], env=script_env(),
                                capture_output=True, text=True, timeout=120)
        # before: SIGBUS (exit -7 / 135) half-way through a memory-mapped write, and a temporary file left behind
        assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
        assert "DiskFullError: No space left on the disk of" in result.stderr
        assert "needs 2.5 MB" in result.stderr and "MB free" in result.stderr
        assert not list((small / "pixels").glob("*.tmp")) and not list((small / "pixels").glob("*.npy"))


def test_a_read_only_cache_dir_runs_without_the_caches_that_can_be_skipped(tmp_path, caplog):
    from art_diffusion import DataError

    root = _image_folder(tmp_path / "art")
    with mounted(tmp_path / "ro", read_only=True) as ro:
        caplog.clear()
        for cache in (False, "auto"):  # the header cache; auto turns the pixel cache off
            dm = _datamodule(root, ro / "cache", tmp_path / str(cache), cache=cache)
            dm.setup("fit")
            assert not dm.use_cache and len(dm.datasets["train"]) > 0
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len([w for w in warnings if "cannot be written" in w and "header cache" in w]) == 1, warnings
        assert any("Pixel cache (data.cache=auto): off, the cache directory" in w for w in warnings), warnings
        # data.cache=true must cache: one message with the fix
        with pytest.raises(DataError, match=r"(?i)data.cache=true needs a writable cache directory.*read-only "
                                            r"file system.*data.cache=false"):
            _datamodule(root, ro / "cache", tmp_path / "true", cache=True).setup("fit")


def test_a_read_only_cache_dir_still_resolves_the_vgg_weights(tmp_path, monkeypatch, caplog):
    import torch

    from art_diffusion.nets.vgg import sources, weights

    # torchvision's vgg16().features[:16] layout: conv layers at these indices, zero weights (no download here)
    channels = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256)}
    state = {}
    for idx, (cin, cout) in channels.items():
        state[f"{idx}.weight"], state[f"{idx}.bias"] = torch.zeros(cout, cin, 3, 3), torch.zeros(cout)
    monkeypatch.setattr(sources, "from_hub_cache", lambda: state)
    with mounted(tmp_path / "ro", read_only=True) as ro:
        monkeypatch.setenv("ART_DIFFUSION_CACHE", str(ro / "cache"))
        with caplog.at_level("INFO"):
            resolved = weights.imagenet_vgg16_state(16)  # before: the lock file on the read-only disk, a traceback
        assert resolved.keys() == state.keys()
        assert "cannot be written" in caplog.text and "not cached" in caplog.text


@pytest.mark.slow  # trains a few steps
def test_train_with_a_read_only_cache_dir_runs_without_it_or_says_why_it_cannot(tmp_path, demo_root):
    from tests.helpers.scripts import SHORT, tiny

    with mounted(tmp_path / "ro", read_only=True) as ro:
        env = {"ART_DIFFUSION_CACHE": str(ro / "cache")}
        args = [*tiny(demo_root), *SHORT, "test=false"]
        ran = _script("train.py", *args, "data.cache=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                      env=env)
        assert ran.returncode == 0, ran.stderr[-3000:]
        log = (tmp_path / "run" / "train.log").read_text()
        assert log.count("cannot be written") == 1 and "running without the header cache" in log
        refused = _script("train.py", *args, "data.cache=true", f"hydra.run.dir={tmp_path / 'run2'}", cwd=tmp_path,
                          env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
        line = refused.stderr.strip().splitlines()[-1]  # after Lightning's start-up lines, at data setup
        assert line.startswith("error: data.cache=true needs a writable cache directory") and "data.cache=false" in line
