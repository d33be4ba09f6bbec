"""Run scripts/train.py as a user would, in a subprocess, with the tiny offline settings of the tests."""

import os
import subprocess
import sys
from pathlib import Path

from art_diffusion.run.cluster.ddp import RUN_DIR_ENV
from tests.helpers.config import REPO, TINY

# One epoch of two batches, one validation and one test batch: enough for every metric to exist.
SHORT = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1"]


def script_env() -> dict[str, str]:
    """The environment of a script run by a test: this checkout's package (and tests.* for test callbacks)."""
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    env["PYTHONPATH"] = f"{REPO / 'src'}:{REPO}"
    return env


def train_script(*args: str, cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    """Run scripts/train.py in a subprocess, importing this checkout's package (and tests.* for test callbacks)."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=cwd, env=script_env(),
                          capture_output=True, text=True, timeout=timeout)


def tiny(demo_root: Path) -> list[str]:
    return [o for o in TINY if not o.startswith("trainer.max_epochs")] + [f"data.root={demo_root}"]
