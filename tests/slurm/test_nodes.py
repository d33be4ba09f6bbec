"""The two-node commands of docs/clusters.md on a real two-node cluster (`cluster.sh start --nodes 2`: two network
namespaces with their own hostnames and addresses, one CPU each, sharing the file system as cluster nodes share
NFS): a DDP job over both nodes, a node lost while that job trains, and a sweep whose jobs run on both nodes at once.

(This file sorts before test_slurm.py, so a session that starts here switches to the one-node cluster once.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.scripts import SHORT, script_env, tiny, train_script
from tests.slurm.conftest import CLUSTER
from tests.slurm.test_slurm import (
    _final_state,
    _release,
    _rows,
    _scontrol_job,
    _slurm_job_ids,
    _wait,
    launcher,
    start_paced_job,
)
from tests.test_ddp import PROBE, assert_one_synced_ddp_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # jobs on a cluster: never in the fast lane

NODES = {"adnode1": "10.77.0.11", "adnode2": "10.77.0.12"}  # cluster.sh's names and addresses
TWO_NODES = ["trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2"]  # one gloo rank per node


@pytest.fixture
def slurm2(slurm2_env, monkeypatch) -> dict[str, str]:
    """The scripts and SLURM commands of this test talk to the two-node cluster."""
    monkeypatch.setenv("SLURM_CONF", slurm2_env["SLURM_CONF"])
    return slurm2_env


def test_srun_reaches_two_hosts(slurm2):
    out = subprocess.run(["srun", "-N2", "hostname"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert sorted(out.split()) == sorted(NODES)


def _span(job: dict[str, str]) -> tuple[datetime, datetime]:
    """When SLURM ran a job (its StartTime and EndTime, to the second): the whole job, start-up included. A job's own
    training, a few seconds of a tiny run, can miss the other node's under a loaded CI machine."""
    return datetime.fromisoformat(job["StartTime"]), datetime.fromisoformat(job["EndTime"])


def test_sweep_of_four_jobs_runs_on_both_nodes_at_once(slurm2, tmp_path, demo_root):
    sweep = tmp_path / "sweep"
    result = train_script("-m", *tiny(demo_root), *SHORT, *launcher(), "seed=1,2,3,4", f"hydra.sweep.dir={sweep}",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    ids = _slurm_job_ids(sweep)
    states = [_final_state(i) for i in ids]
    assert len(ids) == 4 and all(state["JobState"] == "COMPLETED" for state in states)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != ".submitit")
    assert [p.name for p in jobs] == [f"seed={s}" for s in (1, 2, 3, 4)]  # the run dirs of a local sweep
    records = {job.name: json.loads((job / "job.json").read_text()) for job in jobs}
    # every job ran on the node SLURM gave it, under that node's hostname, and both nodes had jobs...
    assert {(r["host"] == r["slurm_node"]) for r in records.values()} == {True}
    assert {r["slurm_node"] for r in records.values()} == set(NODES)
    # ...at the same time: some two jobs on different nodes overlapped (each node has one CPU)
    spans = [(_span(state), state["NodeList"]) for state in states]
    assert any(a[1] != b[1] and a[0][0] < b[0][1] and b[0][0] < a[0][1] for a in spans for b in spans), spans
    rows = {row["seed"]: row for row in _rows(sweep)}
    assert sorted(rows) == ["1", "2", "3", "4"] and {r["status"] for r in rows.values()} == {"completed"}
    for job in jobs:  # each row is its job's run
        row = rows[job.name.split("=")[1]]
        assert Path(row["run_dir"]) == job.resolve()
        assert float(row["val/psnr"]) == pytest.approx(json.loads((job / "metrics.json").read_text())["val/psnr"])
        assert (job / "checkpoints" / "best.ckpt").exists() and (job / ".hydra" / "config.yaml").exists()
        assert list(job.glob("events.out.tfevents.*"))


def test_ddp_job_over_two_nodes(slurm2, tmp_path, demo_root):
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    result = train_script("-m", *tiny(demo_root), *SHORT, *TWO_NODES, *PROBE, "test=false", *launcher(),
                          "data.cache=true", f"data.cache_dir={cache}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    (job_id,) = _slurm_job_ids(sweep)
    job = _final_state(job_id)
    assert (job["JobState"], job["NumNodes"], job["NumTasks"], job["NodeList"]) == (
        "COMPLETED", "2", "2", "adnode[1-2]")
    run = sweep / "0"
    assert_one_synced_ddp_run(run, spawned=False)  # one run dir, one TensorBoard run, identical final weights
    ranks = [torch.load(run / "ranks" / f"rank_{r}.pt", weights_only=True) for r in (0, 1)]
    # srun started one rank per node; rank 0 on the first node, where both met (gloo over the bridge, no loopback)
    assert [(r["slurm_procid"], r["host"]) for r in ranks] == [("0", "adnode1"), ("1", "adnode2")]
    assert {(r["cluster_environment"], r["auto_requeue"], r["master_addr"]) for r in ranks} == {
        ("SLURMEnvironment", False, "adnode1")}
    assert NODES["adnode1"] in ranks[1]["peers"] and NODES["adnode2"] in ranks[0]["peers"]
    # the pixel cache and the target-feature store: each built once (by whichever rank took its lock first), read by
    # both hosts
    logs = "".join(p.read_text() for p in (sweep / ".submitit" / job_id).glob("*_log.*"))  # each task's output
    assert logs.count("Built the pixel cache") == 1, logs[-3000:]
    assert logs.count("Built the target-feature store") == 1, logs[-3000:]
    for kind in ("pixels", "features"):
        (store,) = (cache / kind).glob("*.npy")
        readers = store.with_name(store.stem + ".readers")
        assert {p.name.split("-")[0] for p in readers.glob("*.lock")} == set(NODES), kind
    assert _rows(sweep)[0]["status"] == "completed"


def _cluster(*command: str) -> None:
    done = subprocess.run([str(CLUSTER), *command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


CLAIM = """
import sys
from art_diffusion.storage.locks import InUseError, claim
try:
    with claim(sys.argv[1], "The run dir", "Wait."):
        print("claimed it")
except InUseError as error:
    sys.exit(f"error: {error}")
"""


def _on_adnode2(code: str, *args: str) -> subprocess.CompletedProcess:
    """Python on the host adnode2 (its network namespace, its hostname), outside SLURM."""
    return subprocess.run(["nsenter", "--net=/run/netns/adnode2", "unshare", "--uts", "sh", "-c",
                           'hostname adnode2 && exec "$0" "$@"', sys.executable, "-c", code, *args],
                          env={k: v for k, v in script_env().items() if not k.startswith("SLURM_")},
                          capture_output=True, text=True, timeout=120)


def _step(last: Path) -> tuple[int, int]:
    checkpoint = torch.load(last, weights_only=True)
    return checkpoint["epoch"], checkpoint["global_step"]


def test_a_node_lost_mid_run_costs_the_steps_since_last_ckpt_only(slurm2, tmp_path, demo_root):
    """adnode2 crashes while a two-node DDP job trains: SLURM requeues the job (NODE_FAIL); once the node is back it
    runs again in the same run dir, resume=auto continues from last.ckpt, and it ends as an uninterrupted run."""
    epochs, batches = 8, 2
    sweep, run = tmp_path / "sweep", tmp_path / "sweep" / "job"
    last = run / "checkpoints" / "last.ckpt"
    proc = start_paced_job(sweep, demo_root, *TWO_NODES, epochs=epochs, batches=batches, pace=0.4)  # >= 0.8 s
    job_id = None
    try:
        job_id = _wait(lambda: (sweep / ".submitit").is_dir() and _slurm_job_ids(sweep), "the job", proc)[0]
        _wait(lambda: last.exists() and _step(last)[0] >= 1, "two epochs' checkpoints", proc)
        before = _step(last)

        _cluster("down", "adnode2")  # a crash: every process on it killed (-9), the node DOWN
        _wait(lambda: _scontrol_job(job_id)["JobState"] == "PENDING", "the requeue", proc)
        saved = _step(last)  # what the requeued job will continue from: at least what was there before the crash
        assert saved >= before and _scontrol_job(job_id)["Restarts"] == "1"
        # the job is not over: the sweep waits for the requeued run (rank 0, if it saw its peer go before SLURM
        # stopped it, recorded gloo's error naming the peer's address on the bridge: overwritten when the job ends)
        assert proc.poll() is None
        if (run / "job.json").exists():
            assert f"[{NODES['adnode2']}]" in json.loads((run / "job.json").read_text())["error"]

        _cluster("up", "adnode2")
        _release(job_id)
        _wait(lambda: _scontrol_job(job_id)["JobState"] == "RUNNING", "the second start", proc)
        _wait(lambda: (run / "owner.lock.json").exists(), "the resumed run's owner record", proc)
        other_host = _on_adnode2(CLAIM, str(run / "owner.lock"))  # the run's owner lock, as train.py takes it
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        if job_id and proc.returncode != 0:
            subprocess.run(["scancel", job_id], check=False)
        subprocess.run([str(CLUSTER), "up", "adnode2"], check=False, capture_output=True)
    assert proc.returncode == 0, output[-3000:]
    # from adnode2, while the resumed run trained on adnode1: refused, naming the owner's host
    assert other_host.returncode == 1, other_host.stdout + other_host.stderr  # sys.exit(message)
    assert "The run dir is in use by pid" in other_host.stderr and "on host adnode1" in other_host.stderr

    # the same end as an uninterrupted run, in the one run dir
    assert "continuing it" in (run / "train.log").read_text()
    assert _step(last) == (epochs - 1, epochs * batches) and int(_final_state(job_id)["Restarts"]) == 1
    events = EventAccumulator(str(run))  # the event files of both starts, in the run dir
    events.Reload()
    steps = sorted({e.step for e in events.Scalars("val/loss")})  # each epoch's; those after last.ckpt twice
    assert steps == [batches * (epoch + 1) - 1 for epoch in range(epochs)]
    assert [p.name for p in run.rglob(".hydra")] == [".hydra"]
    assert _rows(sweep)[0]["status"] == "completed" and len(_rows(sweep)) == 1
    assert json.loads((run / "job.json").read_text())["status"] == "completed"
