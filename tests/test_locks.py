"""One owner per run dir, and caches that outlive their readers: real processes, real locks.

A run dir is held by the one process training in it (a second ``resume=`` is refused naming the holder; a holder
killed with ``kill -9`` is taken over). A pixel store another job is reading survives a rebuild of its folder.
(DDP ranks of one job sharing their run dir: tests/test_ddp.py runs trainer=ddp_cpu through this same lock.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from art_diffusion.data import pixel_cache
from art_diffusion.data.listing import list_image_folder
from art_diffusion.run import run_dir_owner
from art_diffusion.run.train import train
from art_diffusion.storage import locks
from art_diffusion.storage.locks import InUseError
from tests.helpers.config import REPO, compose_train_cfg
from tests.helpers.messy_folder import pattern
from tests.helpers.scripts import run_script, tiny, train_script

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


@pytest.mark.slow
def test_a_second_resume_of_a_live_run_is_refused_and_a_dead_owner_is_taken_over(tiny_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = run / "owner.lock.json"
    first = train_script(f"resume={run}", "trainer.max_epochs=100000", wait=False)
    try:
        deadline = time.monotonic() + 240
        while not record.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(record.read_text())["pid"] == first.pid, first.communicate()[0][-3000:]

        second = compose_train_cfg(tmp_path / "unused", f"resume={run}", "trainer.max_epochs=2", tiny=False)
        with pytest.raises(InUseError, match=rf"The run dir {run} is in use by pid {first.pid} on host "
                                             rf"{socket.gethostname()} .*Wait for that run to end or stop it"):
            train(second)
    finally:
        first.kill()  # kill -9: the kernel drops its lock, its record stays behind
        first.wait()
    epoch = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    with caplog.at_level(logging.WARNING):
        train(compose_train_cfg(tmp_path / "unused", f"resume={run}", f"trainer.max_epochs={epoch + 2}",
                                "test=false", tiny=False))
    assert f"Taking over The run dir {run} from pid {first.pid} on host {socket.gethostname()}" in caplog.text
    assert not record.exists()  # released when the run ended
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == epoch + 1


READER = """
import sys
from pathlib import Path
import numpy as np
from art_diffusion.data import pixel_cache
from art_diffusion.data.listing import list_image_folder
root, cache = sys.argv[1], Path(sys.argv[2])
files = list_image_folder(root).files
store = pixel_cache.open_or_build(pixel_cache.store_path(cache, [root], files, 16, 10**8, 8), files, 16, 10**8, 8, 1)
print(store.path, flush=True)
sys.stdin.readline()  # meanwhile the folder changes and another run rebuilds the cache
print(int(np.asarray(store.open()).sum()), flush=True)  # re-opened by path, as the test stage does
"""


def _open(root, cache):
    files = list_image_folder(root).files
    path = pixel_cache.store_path(cache, [str(root)], files, 16, 10**8, 8)
    return pixel_cache.open_or_build(path, files, 16, 10**8, 8, 1)


@pytest.mark.slow
def test_a_pixel_store_in_use_is_not_deleted_under_its_reader(tmp_path):
    root, cache = tmp_path / "art", tmp_path / "cache"
    (root / "painting").mkdir(parents=True)
    for i in range(3):
        pattern(24, 24, seed=i).save(root / "painting" / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(root), str(cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        old = reader.stdout.readline().strip()
        assert old, reader.stderr.read()[-3000:]
        pattern(24, 24, seed=9).save(root / "painting" / "new.png")  # the folder changes...
        new = _open(root, cache)  # ...and another run rebuilds the cache
        assert str(new.path) != old and new.built_s is not None
        assert os.path.exists(old)  # still being read: kept
        out, err = reader.communicate("\n", timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0 and int(out.split()[-1]) > 0, err[-3000:]
    _open(root, cache)  # the reader has exited: the next run removes the stale store
    assert sorted(p.name.split(".")[0] for p in (cache / "pixels").glob("*-*")) == [new.path.stem] * 3


# Several hosts on one shared file system: a free flock proves nothing about a holder on another host (NFS and Lustre
# may keep flocks per host), so its record decides. Records written as another host's process would write them.

def _record_of_another_host(lock_path, beat_age: float, **fields) -> None:
    now = time.time()
    record = {"pid": 4242, "host": "elsewhere", "since": now - 3600, "beat": now - beat_age,
              "slurm_job_id": None, "slurm_restart": 0, **fields}
    locks.record_path(lock_path).write_text(json.dumps(record))


def test_a_live_owner_on_another_host_is_never_taken_over(tmp_path):
    lock_path = tmp_path / "owner.lock"
    _record_of_another_host(lock_path, beat_age=5)
    with pytest.raises(InUseError, match=r"The run dir is in use by pid 4242 on host elsewhere .*refreshed its "
                                         r"record 5 s ago\. Wait\. .*once it has been silent for 120 s"):
        with locks.claim(lock_path, "The run dir", "Wait."):
            pytest.fail("took over a live owner")
    assert json.loads(locks.record_path(lock_path).read_text())["host"] == "elsewhere"  # left as it was
    with locks.file_lock(lock_path, timeout=0):  # and the lock was let go
        pass


def test_a_silent_owner_on_another_host_is_taken_over_with_the_warning(tmp_path, caplog):
    lock_path = tmp_path / "owner.lock"
    _record_of_another_host(lock_path, beat_age=locks.LEASE_S + 1)
    with caplog.at_level(logging.WARNING), locks.claim(lock_path, "The run dir", "Wait."):
        record = json.loads(locks.record_path(lock_path).read_text())
        assert (record["pid"], record["host"]) == (os.getpid(), socket.gethostname())
    assert "Taking over The run dir from pid 4242 on host elsewhere" in caplog.text and "silent for 12" in caplog.text


def test_an_earlier_run_of_the_same_slurm_job_is_taken_over(tmp_path, caplog, monkeypatch):
    """A requeued job whose first run was on another node: SLURM ended that run before starting this one."""
    lock_path = tmp_path / "owner.lock"
    _record_of_another_host(lock_path, beat_age=5, slurm_job_id="77", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # another job: its owner may be alive
    with pytest.raises(InUseError, match="SLURM job 77"):
        with locks.claim(lock_path, "The run dir", "Wait."):
            pass
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with caplog.at_level(logging.WARNING), locks.claim(lock_path, "The run dir", "Wait."):
        assert json.loads(locks.record_path(lock_path).read_text())["slurm_restart"] == 1
    assert "an earlier run of this SLURM job" in caplog.text


def test_a_reader_on_another_host_keeps_its_store_while_it_beats(tmp_path):
    readers = tmp_path / "store.readers"
    readers.mkdir()
    (readers / "elsewhere-4242.lock").touch()
    _record_of_another_host(readers / "elsewhere-4242.lock", beat_age=5)
    assert locks.in_use(readers) and (readers / "elsewhere-4242.lock").exists()
    _record_of_another_host(readers / "elsewhere-4242.lock", beat_age=locks.LEASE_S + 1)
    assert not locks.in_use(readers) and not list(readers.iterdir())


def test_a_holder_refreshes_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(locks, "_beat_thread", None)  # a thread of its own, at this pace
    lock_path = tmp_path / "owner.lock"
    with locks.claim(lock_path, "The run dir", "Wait."):
        first = json.loads(locks.record_path(lock_path).read_text())
        deadline = time.monotonic() + 10
        while json.loads(locks.record_path(lock_path).read_text())["beat"] == first["beat"]:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
        assert json.loads(locks.record_path(lock_path).read_text())["since"] == first["since"]
    time.sleep(0.2)
    assert not locks.record_path(lock_path).exists()  # no beat after the release brings it back


def _tree(directory) -> dict[str, bytes | None]:
    """Every path under ``directory`` with its bytes (None: a dir), but the holder's record, which its heartbeat
    rewrites."""
    return {str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.name != "owner.lock.json"}


@pytest.mark.slow
@pytest.mark.parametrize("aim", ["hydra.run.dir", "hydra.run.dir resume=auto", "resume"])
def test_a_call_aimed_at_a_live_run_dir_is_refused_before_it_writes_anything(tiny_run, tmp_path, demo_root, aim):
    """Hydra writes .hydra/ and train.log before the task runs: a refusal that came from the task would have replaced
    the live run's record of its config (which resume= and the hparams table read) by the refused call's."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("- the live run's own overrides\n")
    (run / "train.log").write_text("the live run's log\n")
    target = [f"resume={run}"] if aim == "resume" else [f"hydra.run.dir={run}", *aim.split()[1:]]
    with run_dir_owner.claim_run_dir(run):  # this test process is the live run
        before = _tree(run)
        result = train_script(*tiny(demo_root), "loss.perceptual_weight=0.5", *target)
        assert _tree(run) == before
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: The run dir {run} is in use by pid {os.getpid()} on host {socket.gethostname()}")


def test_the_run_dir_taken_when_hydra_starts_is_the_one_train_owns_and_is_given_back(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    config = OmegaConf.create({"hydra": {"run": {"dir": str(run)}}})
    owner = run_dir_owner.RunDirOwner()
    try:
        owner.on_run_start(config)
        with run_dir_owner.owned(run):  # held already: no second claim (which would find this process in the way)
            with pytest.raises(InUseError, match=rf"The run dir {run} is in use by pid {os.getpid()}"):
                with run_dir_owner.claim_run_dir(run):
                    pass
    finally:
        owner.on_run_end(config)
    with run_dir_owner.owned(run):  # given back when the run ended: a claim of its own (a second run, in-process)
        assert json.loads((run / "owner.lock.json").read_text())["pid"] == os.getpid()
    assert not (run / "owner.lock.json").exists()


def test_hydra_start_of_a_live_run_dir_is_one_error_line_and_exit_status_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with run_dir_owner.claim_run_dir(run):
        with pytest.raises(SystemExit) as exited:
            run_dir_owner.RunDirOwner().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(run)}}}))
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: The run dir {run} is in use by pid {os.getpid()}")
    assert not run_dir_owner._held


def test_taking_over_a_dead_owner_when_hydra_starts_is_logged_once_the_run_log_is_open(tmp_path, caplog):
    """Hydra opens train.log after the run dir is taken: the warning waits for it (on_job_start) instead of going to
    a log that does not exist yet."""
    run = tmp_path / "run"
    run.mkdir()
    _record_of_another_host(run / "owner.lock", beat_age=locks.LEASE_S + 1)
    config = OmegaConf.create({"hydra": {"run": {"dir": str(run)}}})
    owner = run_dir_owner.RunDirOwner()
    with caplog.at_level(logging.WARNING):
        try:
            owner.on_run_start(config)
            assert "Taking over" not in caplog.text
            owner.on_job_start(config)
            assert f"Taking over The run dir {run} from pid 4242 on host elsewhere" in caplog.text
        finally:
            owner.on_run_end(config)


@pytest.mark.slow
def test_a_new_run_aimed_at_a_finished_run_dir_is_refused_and_leaves_it_as_it_was(tiny_run, tmp_path, demo_root):
    """It used to train into it: the finished run's last.ckpt, metrics.json and .hydra/ replaced by the new run's."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _tree(run)
    result = run_script("train", *tiny(demo_root), "loss.perceptual_weight=0.5", f"hydra.run.dir={run}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: The run dir {run} holds a run already (checkpoints/best.ckpt, "), last
    assert last.endswith(f"To continue it: resume={run} (or resume=auto); to start a new run, give a new "
                         "hydra.run.dir or leave it out (outputs/<date>/<time>).")
    assert _tree(run) == before


@pytest.mark.parametrize(("resume", "refused"), [(None, True), ("auto", False)])
def test_hydra_start_of_a_new_run_in_a_trained_dir_is_refused_unless_it_resumes(tmp_path, capsys, resume, refused):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"a finished run's")
    config = OmegaConf.create({"hydra": {"run": {"dir": str(run)}}, "resume": resume})
    owner = run_dir_owner.RunDirOwner()
    try:
        if refused:
            with pytest.raises(SystemExit) as exited:
                owner.on_run_start(config)
            assert exited.value.code == 2
            assert capsys.readouterr().err.startswith(f"error: The run dir {run} holds a run already "
                                                      "(checkpoints/last.ckpt). To continue it: resume=")
            with run_dir_owner.claim_run_dir(run):  # refused, and the lock given back
                pass
        else:
            owner.on_run_start(config)
            assert run.resolve() in run_dir_owner._held
    finally:
        owner.on_run_end(config)
