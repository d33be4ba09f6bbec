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

from art_diffusion.data import pixel_cache
from art_diffusion.data.listing import list_image_folder
from art_diffusion.run.train import train
from art_diffusion.storage.locks import InUseError
from tests.helpers.config import REPO, compose_train_cfg
from tests.helpers.messy_folder import pattern
from tests.test_checkpoints import _train_cli

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


@pytest.mark.slow
def test_a_second_resume_of_a_live_run_is_refused_and_a_dead_owner_is_taken_over(tiny_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = run / "owner.lock.json"
    first = _train_cli(f"resume={run}", "trainer.max_epochs=100000", wait=False)
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
