"""The local one-node SLURM cluster of cluster.sh, started once per session for the tests marked ``slurm``.

Where SLURM is installed, the cluster is started (and stopped again at the end, if this session started it). Where
it is not, or it cannot start, the tests skip and say why; with ``ART_DIFFUSION_REQUIRE_SLURM=1`` (``.ci/run`` sets
it) they fail instead, so CI never passes without having run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER = Path(__file__).with_name("cluster.sh")
REQUIRE = "ART_DIFFUSION_REQUIRE_SLURM"
CONF_DIR = Path(os.environ.get("ART_DIFFUSION_SLURM_DIR", "/tmp/art-diffusion-slurm"))


def _cluster(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLUSTER), command], capture_output=True, text=True, timeout=600)


def _unavailable(reason: str):
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but the SLURM cluster is unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """The environment that reaches the local cluster (SLURM_CONF set), for subprocesses of the tests."""
    if shutil.which("slurmctld") is None and os.environ.get(REQUIRE) != "1":
        _unavailable("SLURM is not installed; `tests/slurm/cluster.sh start` (as root) installs Debian's packages and "
                     "starts a local cluster")
    was_running = _cluster("status").returncode == 0
    if not was_running:
        started = _cluster("start")
        if started.returncode != 0:
            _unavailable(f"{CLUSTER} start failed: {(started.stderr or started.stdout)[-2000:]}")
    yield {**os.environ, "SLURM_CONF": str(CONF_DIR / "slurm.conf")}
    if not was_running:
        _cluster("stop")
