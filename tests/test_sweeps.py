"""Sweeps through the real scripts/train.py: one dir per job, the summary files, TensorBoard's HPARAMS view, Optuna."""

import csv
import json
import math
import sqlite3
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

from art_diffusion.errors import ConfigError
from art_diffusion.run.job import run_job
from tests.train_script import SHORT, tiny, train_script


def hparams_session_groups(logdir: Path) -> dict[str, tuple[dict, dict]]:
    """What TensorBoard's HPARAMS tab lists for ``logdir``: run -> (hparams, metrics), via the plugin's own handler."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    hparams_context = backend_context.Context(
        base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100,  # the tab's default status filter
                                               allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS])
    response = list_session_groups.Handler(context.RequestContext(), hparams_context, "", request).run()
    groups = {}
    for group in response.session_groups:
        hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in group.hparams.items()}
        groups[group.name] = (hparams, {m.name.tag: m.value for m in group.metric_values})
    return groups


def test_grid_sweep_writes_summaries_hparams_and_survives_a_failing_job(tmp_path, demo_root):
    sweep = tmp_path / "sweep"
    # "oops" is a typo'd value: that job fails at validation, the four others must still run.
    result = train_script("-m", *tiny(demo_root), *SHORT, "loss.perceptual_weight=0,0.25,oops,0.5,1",
                          f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    good = ["0", "0.25", "0.5", "1"]
    jobs = {w: sweep / f"loss.perceptual_weight={w}" for w in [*good, "oops"]}
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(p.name for p in jobs.values())
    failed = json.loads((jobs["oops"] / "job.json").read_text())
    assert failed["status"] == "failed" and "loss.perceptual_weight='oops' must be a number" in failed["error"]
    assert "Traceback" in (jobs["oops"] / "error.txt").read_text()

    with (sweep / "summary.csv").open() as f:
        rows = {row["loss.perceptual_weight"]: row for row in csv.DictReader(f)}
    assert set(rows) == {*good, "oops"}
    assert rows["oops"]["status"] == "failed" and "ConfigError" in rows["oops"]["error"]
    for weight in good:
        metrics = json.loads((jobs[weight] / "metrics.json").read_text())
        row = rows[weight]
        assert row["status"] == "completed" and row["error"] == ""
        assert float(row["val/psnr"]) == pytest.approx(metrics["val/psnr"])
        assert row["best_epoch"] == "0" and float(row["wall_time_s"]) > 0
        assert Path(row["run_dir"]) == jobs[weight].resolve()
        assert json.loads((jobs[weight] / "job.json").read_text())["value"] == pytest.approx(metrics["val/psnr"])
    table = (sweep / "summary.md").read_text()
    assert table in result.stdout  # printed as well
    assert table.count("\n") == 2 + 5 and "| loss.perceptual_weight |" in table
    assert (sweep / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    groups = hparams_session_groups(sweep)
    assert len(groups) == 4  # the failed job never reached its logger
    for hparams, metrics in groups.values():
        weight = next(w for w in good if float(w) == hparams["loss.perceptual_weight"])
        expected = json.loads((jobs[weight] / "metrics.json").read_text())
        assert hparams["optim.lr"] == pytest.approx(1e-3) and hparams["model.net.base_channels"] == 4
        for name in ("val/psnr", "val/ssim", "val/loss"):
            assert metrics[name] == pytest.approx(expected[name]) and metrics[name] != -1


def test_a_failing_job_raises_in_a_single_run_and_is_recorded_in_a_multirun(compose_cfg, tmp_path):
    cfg = compose_cfg("loss.perceptual_weight=oops")
    with pytest.raises(ConfigError, match="loss.perceptual_weight='oops'"):  # a single run fails loudly: exit 2
        run_job(cfg)
    assert not (tmp_path / "run" / "job.json").exists()

    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig().set_config(cfg)
    assert math.isnan(run_job(cfg))  # NaN: Optuna records a failed trial
    record = json.loads((tmp_path / "run" / "job.json").read_text())
    assert record["status"] == "failed" and "ConfigError" in record["error"]
    assert "Traceback" in (tmp_path / "run" / "error.txt").read_text()


def _trials(db: Path) -> list[tuple[int, str, float | None]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v USING (trial_id) "
            "ORDER BY t.number").fetchall()


def test_optuna_search_runs_and_resumes_its_study(tmp_path, demo_root):
    sweep = tmp_path / "optuna"
    args = [*tiny(demo_root), "+trainer.fast_dev_run=true", "test=false", "hparams_search=optuna",
            f"hydra.sweep.dir={sweep}"]
    first = train_script(*args, "hydra.sweeper.n_trials=3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    trials = _trials(sweep / "optuna.db")
    assert [(n, state) for n, state, _ in trials] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]

    # each trial's value is the val/psnr of its job
    psnrs = sorted(json.loads(p.read_text())["val/psnr"] for p in sweep.glob("*/metrics.json"))
    assert sorted(value for _, _, value in trials) == pytest.approx(psnrs)
    assert len(list(sweep.glob("*/job.json"))) == 3

    second = train_script(*args, "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Using an existing study" in second.stderr
    assert len(_trials(sweep / "optuna.db")) == 4
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(row["status"] == "completed" for row in rows)
    assert {"optim.lr", "loss.perceptual_weight"} <= set(rows[0])
    assert all(1e-5 <= float(row["optim.lr"]) <= 1e-2 and not math.isnan(float(row["val/psnr"])) for row in rows)


def test_submitit_local_launcher_runs_a_sweep_job(tmp_path, demo_root):
    sweep = tmp_path / "submitit"
    result = train_script("-m", *tiny(demo_root), "+trainer.fast_dev_run=true", "test=false",
                          "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                          "loss.perceptual_weight=0.5", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    job = sweep / "loss.perceptual_weight=0.5"
    record = json.loads((job / "job.json").read_text())
    assert record["status"] == "completed"
    assert record["value"] == pytest.approx(json.loads((job / "metrics.json").read_text())["val/psnr"])
    # the job ran in a process submitit started, which logged there
    logs = list((sweep / ".submitit").rglob("*_log.out"))
    errors = list((sweep / ".submitit").rglob("*_log.err"))
    assert logs and "Metrics written to" in "".join(p.read_text() for p in logs + errors)
    assert "completed" in (sweep / "summary.csv").read_text()


def test_slurm_launcher_is_sized_from_the_trainer(compose_cfg):
    cfg = compose_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                      "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu"
