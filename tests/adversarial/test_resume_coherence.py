"""Resuming is coherent for every model kind: it exits 0 and job.json says so, a conditional model keeps the meaning
of its labels, and runs killed at random moments (kill -9) finish like an uninterrupted run."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from art_diffusion import ConfigError
from art_diffusion.run.train import train
from tests.helpers.config import REPO, compose_train_cfg
from tests.helpers.events import duplicate_points
from tests.helpers.scripts import SHORT, run_script, script_env, tiny

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")
DDPM = ["model=ddpm", "model.schedule.timesteps=20", "callbacks.samples.num_images=2", "callbacks.samples.steps=2"]


@pytest.mark.slow
def test_a_ddpm_run_resumes_to_exit_0_with_its_own_metric(tmp_path, demo_root):
    run = tmp_path / "run"
    first = run_script("train", *tiny(demo_root), *SHORT, *DDPM, f"hydra.run.dir={run}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run_script("train", f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    job, metrics = json.loads((run / "job.json").read_text()), json.loads((run / "metrics.json").read_text())
    assert job["status"] == "completed" and job["optimized_metric"] == "val/loss"
    assert job["value"] == pytest.approx(metrics["val/loss"]) and metrics["best_epoch"] == 1


@pytest.mark.slow
def test_a_conditional_model_is_not_resumed_on_other_class_names(tmp_path, demo_root):
    run = tmp_path / "run"
    train(compose_train_cfg(run, f"data.root={demo_root}", *DDPM, "model.num_classes=7", "test=false",
                            "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"))
    renamed = tmp_path / "renamed"
    shutil.copytree(demo_root, renamed)
    first = sorted(p for p in renamed.iterdir() if p.is_dir())[0]
    first.rename(first.with_name("zz_" + first.name))  # same count, one other name: labels would shift
    cfg = compose_train_cfg(tmp_path / "ignored", f"resume={run}", f"data.root={renamed}", "trainer.max_epochs=2",
                            tiny=False)
    with pytest.raises(ConfigError, match=rf"trained on the classes .*not in the data: \['{first.name}'\]; new: "
                                          rf"\['zz_{first.name}'\]"):
        train(cfg)


def _args(run: Path, demo_root: Path, epochs: int) -> list[str]:
    """The same command each time, as a requeued cluster job runs it: resume=auto continues the dir if it has a
    last.ckpt and starts it otherwise."""
    return [*tiny(demo_root), "trainer.deterministic=true", f"trainer.max_epochs={epochs}", "test=false",
            "callbacks.reconstructions.every_n_epochs=2", "trainer.log_every_n_steps=1", "resume=auto",
            "+callbacks.pace._target_=tests.helpers.pace.Pace", "+callbacks.pace.seconds=0.15",  # ~1 s an epoch
            "trusted_classes=[tests.helpers.pace.Pace]", f"hydra.run.dir={run}"]


def _start(run: Path, demo_root: Path, epochs: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *_args(run, demo_root, epochs)],
                            cwd=run.parent, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _training_started(run: Path, times: int, proc: subprocess.Popen) -> None:
    """Until the ``times``-th start of training in the run's log (each attempt appends to it)."""
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        log = run / "train.log"
        if log.exists() and log.read_text().count("Pacing the training batches") >= times:
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_ends_like_an_uninterrupted_run(tmp_path, demo_root):
    epochs, rng = 4, random.Random(23)
    full, run = tmp_path / "full", tmp_path / "run"
    assert run_script("train", *_args(full, demo_root, epochs), cwd=tmp_path).returncode == 0
    proc, kills = _start(run, demo_root, epochs), 0
    for attempt in (1, 2):  # a random moment of training: often mid-epoch, sometimes mid-save
        _training_started(run, attempt, proc)
        time.sleep(rng.uniform(0.1, 1.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        kills += 1
        proc = _start(run, demo_root, epochs)
    assert proc.wait(600) == 0, proc.stderr.read()[-3000:]
    assert kills == 2
    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    for key in a["state_dict"]:  # deterministic CPU training: the same weights, however often it was killed
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert json.loads((run / "job.json").read_text())["status"] == "completed"
    assert not list(run.glob("**/*.tmp")) and duplicate_points(run) == {}
