"""A run's whole life, attacked by class: a stop signal at any moment of a job (not only during training), writers
killed outside run dirs (caches, compiled kernels, the demo data), and a shared cache whose folders another user
made. Each must end cleanly: job.json ``interrupted`` and exit 130/143 with no temporary left; every killed
writer's temporary removed by the next writer; an optional cache turned off with one warning.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.config import REPO, TINY
from tests.helpers.scripts import SHORT, run_script, script_env


def _dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _train(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=cwd,
                            env={**script_env(), "OMP_NUM_THREADS": "1", **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _leftovers(*roots: Path) -> list[str]:
    """Temporary files and folders, and lock records (the run dir's owner), that a clean end leaves nowhere. (A
    store's reader registrations are kept until a later opener finds their process gone, by design.)"""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.name.endswith(".tmp") or ".tmp-" in path.name or ".old-" in path.name \
                    or (path.name.endswith(".lock.json") and not path.parent.name.endswith(".readers")):
                found.append(str(path))
    return found


# ---------------------------------------------------------------------------------------------------------------
# 1. A stop signal at any moment of a job

_PAUSE = ["+callbacks.pause._target_=tests.helpers.pace.PauseAt", "+callbacks.pause.seconds=5",
          "trusted_classes=[tests.helpers.pace.PauseAt]"]


@pytest.mark.slow  # starts a training process per moment
@pytest.mark.parametrize(("line", "extra", "stop", "code", "saved"), [
    # data set up, before Lightning's SIGTERM handler exists: it used to die by the default action (no job.json,
    # owner.lock.json and bad_files.csv.<pid>.<hex>.tmp left behind)
    ("Pixel cache (data.cache=auto)", [], signal.SIGTERM, 143, False),
    ("Pixel cache (data.cache=auto)", [], signal.SIGINT, 130, False),
    # (a stop during fit is Lightning's own handler: tests/test_checkpoints.py stops runs mid-fit)
    # the final test of the best checkpoint: its one batch ran to the end, then nothing more was written
    ("Pausing in on_test_start", [*_PAUSE, "+callbacks.pause.hook=on_test_start"], signal.SIGTERM, 143, True),
], ids=["data-setup", "data-setup-ctrl-c", "final-test"])
def test_a_stop_signal_at_any_moment_of_a_job_stops_it_cleanly(tmp_path, line, extra, stop, code, saved):
    run, data = tmp_path / "run", tmp_path / "data"
    proc = _train(*[o for o in TINY if not o.startswith("data.images_per_class")], *SHORT,
                  "data.images_per_class=8", "data.cache=auto", *extra, f"hydra.run.dir={run}",
                  f"paths.data_dir={data}", cwd=tmp_path, env={"ART_DIFFUSION_CACHE": str(tmp_path / "cache")})
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            log = run / "train.log"
            if log.exists() and line in log.read_text():
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"ended before {line!r}: " + proc.communicate()[0][-3000:]
        proc.send_signal(stop)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    name = signal.Signals(stop).name
    assert (run / "job.json").read_text().count('"interrupted"') == 1
    if saved:
        assert f"Stopped by {name}. Continue with: python scripts/train.py resume={run}" in output
    else:
        assert f"Stopped by {name} before the run saved a checkpoint" in output and "nothing to resume" in output
    assert not (run / "metrics.json").exists()
    assert _leftovers(run, data, tmp_path / "cache") == []


def test_a_signal_outside_a_fit_stops_at_once_and_restores_the_handlers():
    from art_diffusion.run.train import StopSignal, stop_signals

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(StopSignal) as stopped, stop_signals() as received:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # delivered at the next bytecode: never reached
        pytest.fail("SIGTERM did not stop the block")
    assert (stopped.value.signal_name, stopped.value.exit_code, received) == ("SIGTERM", 143, ["SIGTERM"])
    assert not isinstance(stopped.value, Exception)  # no `except Exception` on the way out can swallow it
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# ---------------------------------------------------------------------------------------------------------------
# 2. Temporaries of killed writers, wherever they write

def test_a_write_removes_the_temporaries_of_dead_writers_only(tmp_path):
    from art_diffusion.storage import atomic_write
    from art_diffusion.storage.files import _HOST_TAG

    target = tmp_path / "weights.pt"
    dead = tmp_path / f"weights.pt.{_dead_pid()}.{_HOST_TAG}beef.tmp"
    live = tmp_path / f"weights.pt.{os.getppid()}.{_HOST_TAG}cafe.tmp"  # pytest's parent: alive
    elsewhere = tmp_path / f"weights.pt.{_dead_pid()}.{'0000' if _HOST_TAG != '0000' else '1111'}abcd.tmp"
    other_file = tmp_path / f"other.pt.{_dead_pid()}.{_HOST_TAG}beef.tmp"
    for path in (dead, live, elsewhere, other_file):
        path.write_bytes(b"partial")
    atomic_write(target, b"complete")
    assert target.read_bytes() == b"complete" and not dead.exists()
    assert live.exists() and elsewhere.exists() and other_file.exists()  # a live writer, another host, another file


def _header_cache(tmp_path: Path) -> Path:
    from art_diffusion.data import header_check
    from art_diffusion.data.listing import list_image_folder

    root = tmp_path / "art" / "painting"
    root.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (40, 40)).save(root / "a.png")
    files = list_image_folder(str(tmp_path / "art")).files
    cache = header_check.cache_file(tmp_path / "cache", [str(tmp_path / "art")], 50_000_000, 32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    return cache, lambda: header_check.check_headers(files, 50_000_000, 32, cache, workers=0)


def _fused_kernels(tmp_path: Path, monkeypatch):
    from art_diffusion.nets import fused_kernels

    if fused_kernels.compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cache" / "kernels" / f"fused_bn-{fused_kernels.build_key(fused_kernels.compiler())}.so"
    path.parent.mkdir(parents=True, mode=0o700)
    return path, lambda: fused_kernels._build()


def _vgg_weights(tmp_path: Path, monkeypatch):
    import torch

    from art_diffusion.nets.vgg import sources, weights

    channels = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256)}
    state = {}
    for idx, (cin, cout) in channels.items():
        state[f"{idx}.weight"], state[f"{idx}.bias"] = torch.zeros(cout, cin, 3, 3), torch.zeros(cout)
    monkeypatch.setattr(sources, "from_hub_cache", lambda: state)  # the weights' source: no download in a test
    monkeypatch.setenv("ART_DIFFUSION_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache" / "vgg16_imagenet_features16.pt", lambda: weights.imagenet_vgg16_state(16)


@pytest.mark.parametrize("writer", ["header cache", "compiled kernels", "VGG weights"])
def test_every_cache_writer_removes_a_killed_writers_temporary(tmp_path, monkeypatch, writer):
    from art_diffusion.storage.files import _HOST_TAG

    make = {"header cache": lambda: _header_cache(tmp_path), "compiled kernels": lambda: _fused_kernels(tmp_path,
            monkeypatch), "VGG weights": lambda: _vgg_weights(tmp_path, monkeypatch)}[writer]
    final, write = make()
    leftover = final.with_name(f"{final.name}.{_dead_pid()}.{_HOST_TAG}0bad.tmp")  # a kill -9 mid-write
    leftover.write_bytes(b"half")
    write()
    assert final.is_file() and not leftover.exists()
    assert not [p for p in final.parent.iterdir() if p.name.endswith(".tmp")]


def test_the_demo_writer_removes_a_killed_writers_folders_and_makes_a_readable_dataset(tmp_path):
    from art_diffusion.data.demo import write_demo_dataset
    from art_diffusion.storage import temporary_name

    for prefix in (".demo.tmp", ".demo.old"):
        (tmp_path / temporary_name(prefix) / "cubism").mkdir(parents=True)
    root = write_demo_dataset(tmp_path / "demo", images_per_class=1, image_size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]
    assert root.stat().st_mode & 0o055 == 0o055 & ~_umask()  # like a folder the user made: others may read it
    # a complete dataset beside a killed writer's folder (a second writer had waited): removed too
    (tmp_path / temporary_name(".demo.tmp")).mkdir()
    write_demo_dataset(tmp_path / "demo", images_per_class=1, image_size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_PAINT = """
import sys
from art_diffusion.data.demo import write_demo_dataset
write_demo_dataset(sys.argv[1], images_per_class=300, image_size=128)
"""


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (this container's init may never reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # starts a process and kills it
def test_a_demo_writer_killed_while_painting_leaves_nothing_the_next_run_keeps(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _PAINT, str(tmp_path / "demo")], env=script_env())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(tmp_path.glob(".demo.tmp-*/*/*.jpg")):
            time.sleep(0.05)
        assert proc.poll() is None, "painted everything before the kill"
        workers = _children(proc.pid)
        assert workers, "the demo is painted in a pool of worker processes"
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.glob(".demo.tmp-*"))  # what a kill -9 leaves
    deadline = time.monotonic() + 1.5  # killed with it (0.02 s here); orphans would paint their chunk (3 s here)
    while time.monotonic() < deadline and any(map(_running, workers)):
        time.sleep(0.05)
    assert not any(map(_running, workers)), "the painting workers outlive their killed owner"
    from art_diffusion.data.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "demo", images_per_class=1, image_size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]


# ---------------------------------------------------------------------------------------------------------------
# 3. A shared cache whose folders another user made

def _as_another_users_files(path: Path) -> None:
    for entry in [path, *path.rglob("*")]:
        os.chown(entry, 65534, 65534)


def _without_root_powers() -> list[str]:
    """A command prefix that runs as root without the powers that override file permissions: files of uid 65534 are
    then another user's, as for anyone else (the venv under /root stays readable, unlike for user nobody)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as a user without access to another user's files")
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("setpriv cannot drop capabilities here")
    return prefix


@pytest.mark.slow  # trains, then in two processes
def test_a_shared_cache_whose_folders_are_another_users_is_skipped_with_one_warning(tmp_path, demo_root):
    prefix = _without_root_powers()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    tmp_path.chmod(0o755)
    args = [*[o for o in TINY if not o.startswith("trainer.max_epochs")], *SHORT, "test=false",
            f"data.root={demo_root}", "data.cache=auto"]
    env = {**script_env(), "OMP_NUM_THREADS": "1", "ART_DIFFUSION_CACHE": str(shared)}
    first = run_script("train", *args, f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert list((shared / "pixels").glob("*.lock")) and list((shared / "pixels").glob("*.readers"))
    _as_another_users_files(shared / "pixels")

    second = tmp_path / "second"
    for cache in ("auto", "true"):
        run = second / cache
        result = subprocess.run([*prefix, sys.executable, str(REPO / "scripts" / "train.py"), *args,
                                 f"data.cache={cache}", f"hydra.run.dir={run}"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        if cache == "auto":  # before: PermissionError on pixels/<slot>.lock, a traceback, exit 1
            assert result.returncode == 0, result.stderr[-3000:]
            warnings = [w for w in (run / "train.log").read_text().splitlines()
                        if "WARNING" in w and "VGG16 weights are RANDOM" not in w]  # TINY's random weights
            assert len(warnings) == 1 and "Pixel cache (data.cache=auto): off" in warnings[0], warnings
            assert str(shared / "pixels") in warnings[0]
        else:
            assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
            line = result.stderr.strip().splitlines()[-1]
            assert line.startswith("error: data.cache=true needs a writable cache directory"), line
