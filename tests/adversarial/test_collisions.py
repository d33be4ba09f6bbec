"""Two runs never share a run dir: a default run dir that exists already (another run started in the same second)
is never written into; the new run gets a dir of its own before Hydra writes anything."""

from __future__ import annotations

import datetime
import multiprocessing

import pytest

from art_diffusion.checkpoints.resume import unique_dir
from tests.helpers.scripts import SHORT, run_script, tiny


def _claim(default: str, queue) -> None:
    queue.put(unique_dir(default))


def test_runs_started_together_get_distinct_dirs(tmp_path):
    default = str(tmp_path / "outputs" / "2026-01-01" / "12-00-00")
    queue = multiprocessing.get_context("fork").Queue()
    workers = [multiprocessing.get_context("fork").Process(target=_claim, args=(default, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    dirs = sorted(queue.get(timeout=5) for _ in workers)
    assert dirs == sorted([default, *(f"{default}_{n}" for n in (1, 2, 3))])
    assert unique_dir(default) == unique_dir(default)  # one process resolves its run dir to one dir


@pytest.mark.slow
def test_a_default_run_dir_taken_by_another_run_is_left_alone(tmp_path, demo_root):
    # every dir the default could resolve to in the next minute exists, with another run's .hydra/config.yaml
    now = datetime.datetime.now()
    taken = []
    for second in range(90):
        stamp = now + datetime.timedelta(seconds=second)
        run = tmp_path / "outputs" / stamp.strftime("%Y-%m-%d") / stamp.strftime("%H-%M-%S")
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text("another run\n")
        taken.append(run)
    result = run_script("train", *tiny(demo_root), *SHORT, "test=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all((run / ".hydra" / "config.yaml").read_text() == "another run\n" for run in taken)
    assert all(sorted(p.name for p in run.iterdir()) == [".hydra"] for run in taken)
    mine = [p for p in (tmp_path / "outputs").glob("*/*") if p not in taken]
    assert len(mine) == 1 and mine[0].name.endswith("_1") and (mine[0] / "checkpoints" / "last.ckpt").is_file()
