"""The local SLURM clusters of cluster.sh for the tests marked ``slurm``: one node (``slurm_env``) or two nodes in
network namespaces (``slurm2_env``).

Where SLURM is installed, the cluster a test needs is started (one of the other size is stopped first: both use the
same ports and directory), and stopped again at the end if this session started the first one. Under pytest-xdist
the two files may run on two workers at once: each test holds the cluster (``TURN``, a file lock) while it runs.
Where SLURM is not installed, or the cluster cannot start, the tests skip and say why; with
``ART_DIFFUSION_REQUIRE_SLURM=1`` (``.ci/run`` sets it) they fail instead, so CI never passes without having run
them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from filelock import FileLock

CLUSTER = Path(__file__).with_name("cluster.sh")
REQUIRE = "ART_DIFFUSION_REQUIRE_SLURM"
CONF_DIR = Path(os.environ.get("ART_DIFFUSION_SLURM_DIR", "/tmp/art-diffusion-slurm"))
#: pytest-xdist runs test files side by side (-n auto): a SLURM test holds the cluster, across workers, while it runs
TURN = FileLock(str(Path(tempfile.gettempdir()) / "art-diffusion-slurm-tests.lock"))


def _cluster(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLUSTER), *command], capture_output=True, text=True, timeout=600)


def _running_nodes() -> int:
    """The number of nodes of the running cluster, 0 if none runs."""
    if _cluster("status").returncode != 0:
        return 0
    return len((CONF_DIR / "nodes").read_text().split())


def _unavailable(reason: str):
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but the SLURM cluster is unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    """``slurm_cluster(nodes)``: the environment that reaches a running cluster of ``nodes`` nodes (SLURM_CONF set),
    for subprocesses of the tests; started if needed."""
    if shutil.which("slurmctld") is None and os.environ.get(REQUIRE) != "1":
        _unavailable("SLURM is not installed; `tests/slurm/cluster.sh start` (as root) installs Debian's packages and "
                     "starts a local cluster")
    was_running = _running_nodes() > 0

    def ensure(nodes: int) -> dict[str, str]:
        if _running_nodes() != nodes:
            started = _cluster("start", "--nodes", str(nodes))
            if started.returncode != 0:
                _unavailable(f"{CLUSTER} start --nodes {nodes} failed: {(started.stderr or started.stdout)[-2000:]}")
        return {**os.environ, "SLURM_CONF": str(CONF_DIR / "slurm.conf")}

    yield ensure
    if not was_running:
        with TURN:  # not under another worker's running test
            _cluster("stop")


@pytest.fixture
def _cluster_turn():
    with TURN:
        yield


@pytest.fixture
def slurm_env(slurm_cluster, _cluster_turn) -> dict[str, str]:
    """The one-node cluster (on localhost)."""
    return slurm_cluster(1)


@pytest.fixture
def slurm2_env(slurm_cluster, _cluster_turn) -> dict[str, str]:
    """The two-node cluster (adnode1, adnode2: network namespaces, one CPU each)."""
    return slurm_cluster(2)
