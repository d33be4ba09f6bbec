"""The two-node commands of docs/clusters.md on a real two-node cluster (`cluster.sh start --nodes 2`: two network
namespaces with their own hostnames and addresses, one CPU each, sharing the file system as cluster nodes share
NFS): a DDP job over both nodes, a node lost while that job trains, and a sweep whose jobs run on both nodes at once.

(This file sorts before test_slurm.py, so a session that starts here switches to the one-node cluster once.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers.scripts import SHORT, tiny, train_script
from tests.slurm.test_slurm import _final_state, _rows, _slurm_job_ids, launcher
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


def _spans(job: Path) -> tuple[float, float]:
    """When a job of a sweep trained: (start, end), from its job.json's wall time and the time it was written."""
    end = (job / "job.json").stat().st_mtime
    return end - json.loads((job / "job.json").read_text())["wall_time_s"], end


def test_sweep_of_four_jobs_runs_on_both_nodes_at_once(slurm2, tmp_path, demo_root):
    sweep = tmp_path / "sweep"
    result = train_script("-m", *tiny(demo_root), *SHORT, *launcher(), "seed=1,2,3,4", f"hydra.sweep.dir={sweep}",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    ids = _slurm_job_ids(sweep)
    assert len(ids) == 4 and all(_final_state(i)["JobState"] == "COMPLETED" for i in ids)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != ".submitit")
    assert [p.name for p in jobs] == [f"seed={s}" for s in (1, 2, 3, 4)]  # the run dirs of a local sweep
    records = {job.name: json.loads((job / "job.json").read_text()) for job in jobs}
    # every job ran on the node SLURM gave it, under that node's hostname, and both nodes had jobs...
    assert {(r["host"] == r["slurm_node"]) for r in records.values()} == {True}
    assert {r["slurm_node"] for r in records.values()} == set(NODES)
    # ...at the same time: some two jobs on different nodes overlapped (each node has one CPU)
    spans = {name: (_spans(sweep / name), records[name]["slurm_node"]) for name in records}
    assert any(a[1] != b[1] and a[0][0] < b[0][1] and b[0][0] < a[0][1]
               for a in spans.values() for b in spans.values())
    rows = {row["seed"]: row for row in _rows(sweep)}
    assert sorted(rows) == ["1", "2", "3", "4"] and {r["status"] for r in rows.values()} == {"completed"}
    for job in jobs:
        assert Path(rows[job.name.split("=")[1]]["run_dir"]) == job.resolve()
        assert (job / "checkpoints" / "best.ckpt").exists() and list(job.glob("events.out.tfevents.*"))


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
    # the pixel cache: one store, built once (by whichever rank took its lock first), read by both hosts
    logs = "".join(p.read_text() for p in (sweep / ".submitit" / job_id).glob("*_log.*"))  # each task's output
    assert logs.count("Built the pixel cache") == 1, logs[-3000:]
    (store,) = cache.rglob("*.npy")
    readers = store.with_name(store.stem + ".readers")
    assert {p.name.split("-")[0] for p in readers.glob("*.lock")} == set(NODES)
    assert _rows(sweep)[0]["status"] == "completed"
