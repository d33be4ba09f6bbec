"""resume=auto, and a submitit job that is signalled the way SLURM signals it: last.ckpt first, then requeued into
the same job dir, where it continues (on a real cluster: tests/slurm/test_slurm.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from art_diffusion import UserError
from art_diffusion.checkpoints.resume import hydra_subdir
from art_diffusion.run.train import train
from tests.helpers.config import REPO
from tests.helpers.scripts import script_env, tiny

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


def _last(run: Path) -> tuple[int, int]:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return checkpoint["epoch"], checkpoint["global_step"]


@pytest.mark.slow  # two runs
def test_resume_auto_starts_a_run_then_continues_it(compose_cfg, tmp_path):
    run = tmp_path / "run"
    assert hydra_subdir("auto", "t0", str(run)) == ".hydra"  # nothing to resume: Hydra's usual config dir
    short = ["test=false", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "resume=auto"]
    train(compose_cfg(*short, output_dir=run))
    assert _last(run) == (0, 2)
    assert hydra_subdir("auto", "t1", str(run)) == ".hydra/resumed_t1"  # the run's first .hydra stays

    train(compose_cfg(*short, "trainer.max_epochs=3", output_dir=run))  # same command, longer: continues
    assert _last(run) == (2, 6)
    with pytest.raises(UserError, match=r"resume=auto: .* other values of \['optim.lr'\]"):
        train(compose_cfg(*short, "optim.lr=0.5", output_dir=run))


def test_slurm_launcher_requeues_and_asks_a_cpu_trainer_for_no_gpu(compose_cfg):
    launcher = compose_cfg("hydra/launcher=slurm", "trainer=ddp_cpu").hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 2, None)  # no --gpus-per-node
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0
    launcher = compose_cfg("hydra/launcher=slurm", "trainer=gpu").hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node) == (1, 1)


@pytest.mark.slow
def test_process_pool_ends_in_a_job_that_only_logs_sigterm(tmp_path):
    # a submitit job's process logs SIGTERM and goes on; forked pool workers inherit that handler, and the pool's
    # terminate() (at the end of every header check or cache build with workers) then waited for them forever
    code = ("import signal; signal.signal(signal.SIGTERM, lambda *a: print('bypass'))\n"
            "from art_diffusion.data.pool import parallel_map\n"
            "print(sum(parallel_map(abs, list(range(100)), 2, 'numbers')))")
    result = subprocess.run([sys.executable, "-c", code], env=script_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.split()[-1] == "4950", result.stderr[-2000:]


def _job_process(sweep: Path) -> int | None:
    """The pid of the process that runs the sweep's job (submitit's worker), if it has started."""
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"submitit.core._submit" in cmdline and any(str(sweep).encode() in part for part in cmdline):
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process in /proc")
@pytest.mark.slow
def test_submitit_job_signalled_saves_last_ckpt_requeues_and_continues(tmp_path, demo_root):
    epochs, batches = 4, 2
    sweep = tmp_path / "sweep"
    job = sweep / "job"
    args = [*tiny(demo_root), f"trainer.max_epochs={epochs}", f"+trainer.limit_train_batches={batches}",
            "+trainer.limit_val_batches=1", "callbacks.reconstructions=null", "test=false", "resume=auto",
            "+callbacks.pace._target_=tests.helpers.pace.Pace", "+callbacks.pace.seconds=0.3",  # >= 0.6 s per epoch
            "trusted_classes=[tests.helpers.pace.Pace]",
            "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=job"]
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), "-m", *args], cwd=tmp_path,
                            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (job / "checkpoints" / "last.ckpt").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.2)
        pid = _job_process(sweep)
        assert pid, proc.communicate()[0][-3000:] if proc.poll() is not None else "no job process"
        os.kill(pid, signal.SIGUSR2)  # what SLURM sends before the time limit (submitit's --signal=USR2@...)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]

    log = (job / "train.log").read_text()
    assert "Got SIGUSR2: saving last.ckpt" in log and log.count("SIGTERM: saved") == 1
    assert "Requeued job" in log and log.count("continuing it") == 1  # by submitit, once, into the same dir
    assert _last(job) == (epochs - 1, epochs * batches)  # the end of an uninterrupted run
    assert json.loads((job / "job.json").read_text())["status"] == "completed"
    assert list((job / ".hydra").glob("resumed_*/config.yaml")) and (job / ".hydra" / "config.yaml").exists()
