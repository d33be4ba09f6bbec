"""The files of a run directory, by name: one place, so a reader (the sweep summary, resume) need not import the
code that writes them (training)."""

from pathlib import Path

METRICS_FILE = "metrics.json"                        # final val/* and test/* metrics, written by train()
JOB_FILE = "job.json"                                # a job's status, optimized metric and its value, wall time, error
ERROR_FILE = "error.txt"                             # the traceback of a failed sweep job
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"   # what the job changed on the command line (Hydra writes it)
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"  # the newest state, where resume=RUN_DIR continues from
BEST_CHECKPOINT = Path("checkpoints") / "best.ckpt"  # the best validation epoch: what a run dir means to inference


def read_overrides(run_dir: str | Path) -> list[str] | None:
    """The command-line overrides the run (or sweep job) in ``run_dir`` started with; None when it has none, or one
    that is not a list of overrides (one warning naming it)."""
    from art_diffusion.storage import read_valid, read_yaml

    return read_valid(Path(run_dir) / OVERRIDES_FILE, read_yaml, _strings, "a list of overrides")


def _strings(data) -> bool:
    return isinstance(data, list) and all(isinstance(item, str) for item in data)


def has_checkpoint(run_dir: str | Path) -> bool:
    """A run to continue (resume=) and not to start afresh in: its last.ckpt, or any checkpoint (a run stopped
    between saving best.ckpt and last.ckpt, by a kill or a full disk, is continued from the newest that loads)."""
    return any(path.is_file() for path in (Path(run_dir) / LAST_CHECKPOINT.parent).glob("*.ckpt"))
OWNER_LOCK = "owner.lock"                            # locked by the one process training here; owner.lock.json: who
