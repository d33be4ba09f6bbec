"""The SLURM commands of docs/clusters.md on a real (one-node, local) cluster: a sweep of two jobs, a DDP job of two
srun tasks, and a job that is signalled, requeued and preempted, and still ends like an uninterrupted run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.config import REPO
from tests.helpers.scripts import SHORT, script_env, tiny, train_script
from tests.test_ddp import PROBE, assert_one_synced_ddp_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # jobs on a cluster: never in the fast lane


def launcher(cpus: int = 1) -> list[str]:
    """conf/hydra/launcher/slurm.yaml, sized for the 2-CPU test node."""
    return ["hydra/launcher=slurm", f"hydra.launcher.cpus_per_task={cpus}", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10"]


@pytest.fixture
def slurm(slurm_env, monkeypatch) -> dict[str, str]:
    """The scripts and SLURM commands of this test talk to the local cluster."""
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    return slurm_env


def _scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def _final_state(job_id: str, timeout: float = 60) -> dict[str, str]:
    """The job's record once it has ended (its result is back before its batch script has exited)."""
    deadline = time.monotonic() + timeout
    while (job := _scontrol_job(job_id))["JobState"] in ("RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(0.2)
    return job


def _slurm_job_ids(sweep: Path) -> list[str]:
    """The SLURM ids of a sweep's jobs (``<array id>_<index>`` for several), from submitit's job folders (those with
    logs; an array's own folder holds its sbatch script only)."""
    return sorted(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and list(p.glob("*_log.*")))


def _rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def test_ddp_job_of_two_srun_tasks(slurm, tmp_path, demo_root):
    sweep = tmp_path / "sweep"
    result = train_script("-m", *tiny(demo_root), *SHORT, "trainer=ddp_cpu", *PROBE, "test=false", *launcher(),
                          "loss.perceptual_weight=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    (job_id,) = _slurm_job_ids(sweep)
    job = _final_state(job_id)
    assert (job["JobState"], job["NumNodes"], job["NumTasks"]) == ("COMPLETED", "1", "2")
    run = sweep / "0"  # nothing varies in this one-job sweep: Hydra's job number names it
    assert_one_synced_ddp_run(run, spawned=False)  # one run dir, one TensorBoard run, identical final weights
    ranks = [torch.load(run / "ranks" / f"rank_{r}.pt", weights_only=True) for r in (0, 1)]
    # srun started both ranks; Lightning took them from SLURM's variables, its own requeue switched off
    assert [r["slurm_procid"] for r in ranks] == ["0", "1"]
    assert {(r["cluster_environment"], r["auto_requeue"]) for r in ranks} == {("SLURMEnvironment", False)}
    assert _rows(sweep)[0]["status"] == "completed"


def _wait(condition, what: str, proc: subprocess.Popen, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended while waiting for {what}: {proc.communicate()[0][-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _release(job_id: str) -> None:
    """SLURM holds a requeued job for two minutes (its EligibleTime); the test does not wait for that. It does wait
    two seconds: slurmd refuses a start in the same second as its revocation of the job's previous credential
    ("Killing non-startable batch job: Job credential revoked", and the job FAILS)."""
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def _restarts(job_id: str) -> int:
    job = _scontrol_job(job_id)
    return int(job["Restarts"]) if job["JobState"] == "RUNNING" else -1


def start_paced_job(sweep: Path, demo_root: Path, *extra: str, epochs: int, batches: int, pace: float,
                    cpus: int = 1) -> subprocess.Popen:
    """A ``resume=auto`` job of ``epochs`` epochs of ``batches`` batches, each batch at least ``pace`` seconds, sent to
    SLURM by the launcher (its run dir: ``sweep/job``), as a requeued cluster job runs."""
    args = [*tiny(demo_root), *extra, f"trainer.max_epochs={epochs}", f"+trainer.limit_train_batches={batches}",
            "+trainer.limit_val_batches=1", "callbacks.reconstructions=null", "test=false", "resume=auto",
            "+callbacks.pace._target_=tests.helpers.pace.Pace", f"+callbacks.pace.seconds={pace}",
            "trusted_classes=[tests.helpers.pace.Pace]",
            *launcher(cpus=cpus), f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job"]
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), "-m", *args], cwd=sweep.parent,
                            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_signalled_requeued_and_preempted_job_continues_to_the_same_end(slurm, tmp_path, demo_root):
    epochs, batches = 8, 2
    sweep, log = tmp_path / "sweep", tmp_path / "sweep" / "job" / "train.log"
    last = sweep / "job" / "checkpoints" / "last.ckpt"
    proc = start_paced_job(sweep, demo_root, epochs=epochs, batches=batches, pace=0.3, cpus=2)  # >= 0.6 s an epoch
    job_id = None
    try:
        job_id = _wait(lambda: (sweep / ".submitit").is_dir() and _slurm_job_ids(sweep), "the job", proc)[0]

        # 1. the signal SLURM sends before a time limit (submitit's USR2): last.ckpt first, then submitit requeues
        _wait(last.exists, "the first checkpoint", proc)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        _wait(lambda: _scontrol_job(job_id)["JobState"] == "PENDING", "the requeue", proc)
        assert "Got SIGUSR2: saving last.ckpt" in log.read_text() and "SIGTERM: saved" in log.read_text()
        saved = last.stat().st_mtime
        _release(job_id)
        _wait(lambda: _restarts(job_id) == 1, "the second start", proc)

        # 2. preemption: a job of the `high` partition needs the CPUs; SIGTERM, last.ckpt, SLURM requeues
        _wait(lambda: last.stat().st_mtime > saved, "a checkpoint of the resumed run", proc)
        high = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", "2", "-o", "/dev/null", "--wrap", "true"],
                              capture_output=True, text=True, check=True).stdout.strip()
        _wait(lambda: _scontrol_job(job_id)["JobState"] == "PENDING", "the preemption", proc)
        assert log.read_text().count("SIGTERM: saved") == 2
        _wait(lambda: _scontrol_job(high)["JobState"] == "COMPLETED", "the high-priority job", proc)
        _release(job_id)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        if job_id and proc.returncode != 0:
            subprocess.run(["scancel", job_id], check=False)
    assert proc.returncode == 0, output[-3000:]

    text = log.read_text()
    assert text.count("continuing it") == 2 and int(_final_state(job_id)["Restarts"]) == 2
    # the same end as an uninterrupted run: every epoch and step once, in one run dir
    final = torch.load(last, weights_only=True)
    assert (final["epoch"], final["global_step"]) == (epochs - 1, epochs * batches)
    events = EventAccumulator(str(sweep / "job"))  # the event files of all three starts, in the run dir
    events.Reload()
    steps = [e.step for e in events.Scalars("val/loss")]  # each epoch's, once
    assert steps == [batches * (epoch + 1) - 1 for epoch in range(epochs)]  # Lightning's step of each epoch's end
    assert _rows(sweep)[0]["status"] == "completed" and len(_rows(sweep)) == 1
    assert json.loads((sweep / "job" / "job.json").read_text())["status"] == "completed"
