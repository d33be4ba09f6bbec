"""SweepSummary: when a Hydra multirun ends, one table of all its jobs in the sweep dir (csv, markdown, a plot).

Each job dir of the sweep holds ``.hydra/overrides.yaml`` (what the job changed), ``metrics.json`` (written by
train()) and ``job.json`` (status, wall time, error; written by art_diffusion.run.job). Jobs that share the sweep dir
from earlier invocations (a resumed Optuna study) are included too.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from art_diffusion.run.run_dir import JOB_FILE, METRICS_FILE, OVERRIDES_FILE, read_overrides
from art_diffusion.storage import atomic_path, atomic_write, read_json, read_valid

log = logging.getLogger(__name__)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in sweep_dir.iterdir() if (p / OVERRIDES_FILE).exists() or (p / JOB_FILE).exists()]

    def started(job: Path) -> float:  # Hydra writes the overrides file when the job starts
        return (job / OVERRIDES_FILE).stat().st_mtime if (job / OVERRIDES_FILE).exists() else 0.0

    return sorted(dirs, key=lambda job: (started(job), job.name))


def _read_json(path: Path) -> dict:
    """A job's JSON record; {} (the job then shows as unfinished) when there is none or it cannot be read."""
    return read_valid(path, read_json, lambda data: isinstance(data, dict), "a JSON object") or {}


def _overrides(job_dir: Path) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in read_overrides(job_dir) or [])


def swept_keys(overrides: list[dict[str, str]]) -> list[str]:
    """Keys whose value is not the same in every job (all keys when there is a single job)."""
    keys = list(dict.fromkeys(k for o in overrides for k in o))  # first-seen order
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    return varying if len(overrides) > 1 else keys


def collect(sweep_dir: Path, metrics: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per job dir of ``sweep_dir`` and the swept keys."""
    jobs = _job_dirs(sweep_dir)
    overrides = [_overrides(job) for job in jobs]
    keys = swept_keys(overrides)
    rows = []
    for job, override in zip(jobs, overrides):
        record, values = _read_json(job / JOB_FILE), _read_json(job / METRICS_FILE)
        status = record.get("status") or ("completed" if values else "unfinished")
        error = record.get("error") or ("" if values else "no job.json or metrics.json: killed, or still running")
        rows.append({
            "job": job.name,
            **{key: override.get(key, "") for key in keys},
            "status": status,
            **{name: values.get(name) for name in metrics},
            "best_epoch": values.get("best_epoch"),
            "wall_time_s": record.get("wall_time_s"),
            "error": error,
            "run_dir": str(job.resolve()),
        })
    return rows, keys


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[dict[str, Any]]) -> str:
    columns = [c for c in rows[0] if c != "run_dir"]  # the job name already locates it in the sweep dir
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def plot(rows: list[dict[str, Any]], key: str, metric: str, path: Path) -> bool:
    """``metric`` against the swept ``key`` over the jobs that have it; False (nothing drawn) unless all are numbers."""
    measured = [(_number(r[key]), r[metric]) for r in rows if r.get(metric) is not None and not math.isnan(r[metric])]
    if not measured or any(x is None for x, _ in measured):
        return False
    points = sorted(measured)
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot([x for x, _ in points], [y for _, y in points], marker="o")
    ax.set(xlabel=key, ylabel=metric, title=f"{metric} vs {key}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return True


#: Set by :class:`SweepSummary` when no job of the sweep completed: scripts/train.py then exits with status 2.
failed_sweeps: list[str] = []


def exit_if_sweep_failed() -> None:
    """After a multirun: one ``error:`` line and exit status 2 when no job of it completed (a sweep of failures is
    not a success), or when a job was refused its dir because it holds another run (its row in the summary is that
    run's, not this sweep's)."""
    from art_diffusion.run.run_dir_owner import refused_jobs

    refused, failed = list(refused_jobs), list(failed_sweeps)
    refused_jobs.clear()  # read once: a later multirun in this process starts with none
    failed_sweeps.clear()
    if refused:
        print(f"error: {len(refused)} job(s) of the sweep did not run, their dirs hold other runs: {refused[0]}",
              file=sys.stderr)
        raise SystemExit(2)
    if failed:
        print(f"error: {failed[-1]}", file=sys.stderr)
        raise SystemExit(2)


class SweepSummary(Callback):
    """Hydra callback (hydra.callbacks in conf/hydra/default.yaml): writes summary.csv, summary.md and summary.png."""

    def __init__(self, metrics: list[str], plot_metric: str | None = None) -> None:
        self.metrics = list(metrics)
        self.plot_metric = plot_metric

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            log.warning("No sweep summary: the sweep dir %s does not exist (no job ran).", sweep_dir)
            return
        rows, keys = collect(sweep_dir, self.metrics)
        if not rows:
            log.warning("No sweep summary: no job dirs in %s.", sweep_dir)
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(sweep_dir / "summary.csv", text.getvalue())
        table = markdown(rows)
        atomic_write(sweep_dir / "summary.md", table)
        print(f"\nSweep summary ({sweep_dir}):\n\n{table}")
        if not any(row["status"] == "completed" for row in rows):
            statuses = sorted({row["status"] for row in rows})
            failed_sweeps.append(f"no job of the sweep {sweep_dir} completed ({len(rows)} jobs: {', '.join(statuses)});"
                                 f" their errors are in {sweep_dir / 'summary.md'} and each job's error.txt. Fix the "
                                 "cause and run the sweep again.")
        if len(keys) == 1 and self.plot_metric:
            try:
                if plot(rows, keys[0], self.plot_metric, sweep_dir / "summary.png"):
                    log.info("Plotted %s against %s in %s", self.plot_metric, keys[0], sweep_dir / "summary.png")
            except Exception:  # a missing plot must not hide the tables of a long sweep
                log.exception("Could not draw summary.png; summary.csv and summary.md are written.")
