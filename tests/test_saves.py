"""Saves survive kill -9 and a full disk on any file system: the run dir sits on its own tmpfs, as on a cluster
whose scratch disk is not the one holding /tmp, and the run is killed or starved in the middle of a save."""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path

import pytest
import torch

from art_diffusion.checkpoints import load_checkpoint
from art_diffusion.run.train import train
from tests.helpers.config import TINY, compose_train_cfg
from tests.helpers.mounts import mounted
from tests.helpers.scripts import run_script, train_script

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")

FAST = [*TINY, "trainer.max_epochs=2", "test=false", "callbacks.reconstructions=null", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1"]


@pytest.fixture
def tmpfs(tmp_path):
    """A directory on a fresh 64 MiB tmpfs."""
    with mounted(tmp_path / "tmpfs", "64m") as mount:
        yield mount


def _checkpoints_all_load(run: Path) -> dict[str, int]:
    """Every file under a final checkpoint name loads; their epochs."""
    return {p.name: load_checkpoint(p)["epoch"] for p in sorted((run / "checkpoints").glob("*.ckpt"))}


@pytest.mark.slow
def test_kill_9_at_any_moment_of_a_save_leaves_only_whole_checkpoints(tmpfs, tmp_path, demo_root):
    run, state = tmpfs / "run", tmp_path / "kills.txt"
    killer = ["+callbacks.kill._target_=tests.helpers.crash.KillDuringSave", f"+callbacks.kill.state_path={state}",
              f"+callbacks.kill.dirpath={run / 'checkpoints'}", "+callbacks.kill.moments=[write,open,replace]",
              "trusted_classes=[tests.helpers.crash.KillDuringSave]"]
    result = train_script(*FAST, f"data.root={demo_root}", *killer, f"hydra.run.dir={run}")
    for moment in ("write", "open", "replace"):  # each run of the chain is killed once, at the next moment
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
        assert state.read_text().splitlines()[-1].startswith(moment)
        assert _checkpoints_all_load(run)["last.ckpt"] == 0  # the epoch-1 save never became a final name
        result = train_script(f"resume={run}", "trusted_classes=[tests.helpers.crash.KillDuringSave]")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _checkpoints_all_load(run)["last.ckpt"] == 1
    assert not list((run / "checkpoints").glob("*.tmp"))  # leftovers of the killed saves are removed on resume


@pytest.mark.slow
def test_a_full_disk_ends_with_one_message_and_keeps_the_last_good_checkpoint(tmpfs, demo_root):
    # epoch 0 saves; before epoch 1's save the disk is filled, so that less than half a checkpoint fits
    run = tmpfs / "run"
    filler = ["+callbacks.fill._target_=tests.helpers.crash.FillDiskBeforeSave",
              f"+callbacks.fill.filler={run / 'filler'}", "trusted_classes=[tests.helpers.crash.FillDiskBeforeSave]"]
    result = run_script("train", *FAST, f"data.root={demo_root}", *filler, f"hydra.run.dir={run}")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"No space left on the disk of {run / 'checkpoints'} (" in errors[0] and " MB free" in errors[0]
    assert "resume=" in errors[0]
    assert not list((run / "checkpoints").glob("*.tmp"))  # no partial file
    assert _checkpoints_all_load(run) == {"best.ckpt": 0, "last.ckpt": 0}  # the last good checkpoint, intact


def test_a_run_stopped_before_its_first_last_ckpt_is_resumed_from_best(tiny_run, tmp_path, caplog):
    """A kill or a full disk between saving best.ckpt and last.ckpt: the run dir is a run (a new run is refused
    there), so resume= continues it from the newest checkpoint that loads instead of refusing too."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last = run / "checkpoints" / "last.ckpt"
    last.unlink()
    with caplog.at_level(logging.INFO):
        train(compose_train_cfg(tmp_path / "unused", f"resume={run}", "trainer.max_epochs=2", "test=false",
                                tiny=False))
    assert "it was never written" in caplog.text and f"Resuming from {run / 'checkpoints' / 'best.ckpt'}" in caplog.text
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert not list((run / "checkpoints").glob("*-v1.ckpt"))


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tiny_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # as a copy cut short would leave it
    (run / "checkpoints" / "last.ckpt.123.abcd1234.tmp").write_bytes(b"partial")
    with caplog.at_level(logging.INFO):
        train(compose_train_cfg(tmp_path / "unused", f"resume={run}", "trainer.max_epochs=2", "test=false",
                                tiny=False))
    assert f"{last} is unreadable" in caplog.text
    assert f"Resuming from {run / 'checkpoints' / 'best.ckpt'}" in caplog.text
    assert torch.load(last, weights_only=True)["epoch"] == 1  # training went on, and saved last.ckpt again
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if "epoch_" not in p.name) == [
        "best.ckpt", "last.ckpt", "last.ckpt.unreadable"]  # no last-v1.ckpt, no leftover .tmp


def test_a_last_ckpt_that_became_readable_while_the_resume_was_prepared_stops_it(tiny_run, tmp_path):
    """The checkpoint to resume from is chosen before the run dir is owned; under the lock an unreadable last.ckpt
    is checked again before it is moved aside, so a good one saved in between is never set aside."""
    from art_diffusion import UserError
    from art_diffusion.checkpoints.resume import tidy_run_dir

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last, best = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "best.ckpt"
    with pytest.raises(UserError, match="became readable while this run was being prepared"):
        tidy_run_dir(run, best)  # prepared from best.ckpt, but last.ckpt loads now
    assert last.is_file()
    last.write_bytes(last.read_bytes()[:1000])
    tidy_run_dir(run, best)
    assert not last.exists() and (run / "checkpoints" / "last.ckpt.unreadable").is_file()
