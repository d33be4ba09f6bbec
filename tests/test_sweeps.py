"""Sweeps through the real scripts/train.py: one dir per job, the summary files, TensorBoard's HPARAMS view, Optuna."""

import contextlib
import csv
import json
import math
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, read_write
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, event_file_loader, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

from art_diffusion import ConfigError, UserError
from art_diffusion.lightning.loggers import readable_tag
from art_diffusion.run import run_dir_owner
from art_diffusion.run.job import run_job
from art_diffusion.run.sweeps.record import describe_sweep, job_dirname
from art_diffusion.run.sweeps.summary import exit_if_sweep_failed
from art_diffusion.run.train import train
from tests.helpers.config import DEMO_LR, compose_train_cfg
from tests.helpers.scripts import SHORT, run_script, tiny, train_script


def _hparams_context(logdir: Path) -> backend_context.Context:
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    return backend_context.Context(
        base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider))


def hparams_columns(logdir: Path) -> tuple[list[str], list[str]]:
    """The hparams and metrics the HPARAMS tab shows before any click: the tab puts the hparams that differ first
    and shows five of each (tf-hparams-query-pane)."""
    hparams_context = _hparams_context(logdir)
    ctx = context.RequestContext()
    experiment = hparams_context.experiment_from_metadata(
        ctx, "", True, hparams_context.hparams_metadata(ctx, ""), None)
    hparams = sorted(experiment.hparam_infos, key=lambda info: not info.differs)  # a stable sort, like the tab's
    return [info.name for info in hparams][:5], [info.name.tag for info in experiment.metric_infos][:5]


def logged_values(run: Path) -> list[tuple[str, int]]:
    """(tag, step) of every value in the run's event files, read back with TensorBoard's own event file loader."""
    return [(value.tag, event.step) for path in sorted(run.glob("*tfevents*"))
            for event in event_file_loader.EventFileLoader(str(path)).Load() for value in event.summary.value]


def assert_logged_once_with_images_beside_scalars(run: Path) -> None:
    values = logged_values(run)
    # "epoch" is Lightning's: it goes with every batch of scalars it logs, several at one step
    counts = Counter(value for value in values if value[0] != "z_run/epoch")
    assert counts and max(counts.values()) == 1, [value for value, n in counts.items() if n > 1]
    steps = {tag: sorted(step for t, step in values if t == tag) for tag in dict(values)}
    assert steps["visuals/reconstructions"] == steps["val/loss"] == steps["val/psnr"]  # images at their epoch's step
    assert steps["test/psnr"] == steps["z_run/best_epoch"] and steps["test/psnr"][-1] >= steps["val/psnr"][-1]


def hparams_session_groups(logdir: Path) -> dict[str, tuple[dict, dict]]:
    """What TensorBoard's HPARAMS tab lists for ``logdir``: run -> (hparams, metrics), via the plugin's own handler."""
    hparams_context = _hparams_context(logdir)
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100,  # the tab's default status filter
                                               allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS])
    response = list_session_groups.Handler(context.RequestContext(), hparams_context, "", request).run()
    groups = {}
    for group in response.session_groups:
        hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in group.hparams.items()}
        groups[group.name] = (hparams, {m.name.tag: m.value for m in group.metric_values})
    return groups


@pytest.mark.slow
def test_grid_sweep_writes_summaries_hparams_and_survives_a_failing_job(tmp_path, demo_root):
    sweep = tmp_path / "sweep"
    # "oops" is a typo'd value: that job fails at validation, the four others must still run.
    result = run_script("train", "-m", *tiny(demo_root), *SHORT, "loss.perceptual_weight=0,0.25,oops,0.5,1",
                        f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    good = ["0", "0.25", "0.5", "1"]
    # a job is named after its swept value alone; the fixed overrides are in the sweep's record
    jobs = {w: sweep / f"perceptual_weight={w}" for w in [*good, "oops"]}
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(p.name for p in jobs.values())
    record = OmegaConf.load(sweep / "sweep.yaml")
    assert record.swept == ["loss.perceptual_weight"] and record.integer == []
    assert "model.net.base_channels=4" in record.fixed and "trainer=cpu" in record.fixed
    failed = json.loads((jobs["oops"] / "job.json").read_text())
    assert failed["status"] == "failed" and "loss.perceptual_weight='oops' must be a finite number" in failed["error"]
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

    # tensorboard --logdir <sweep dir>: one run per job, named after its swept value
    groups = hparams_session_groups(sweep)
    assert sorted(groups) == sorted(f"perceptual_weight={w}" for w in good)  # the failed job never logged
    for name, (hparams, metrics) in groups.items():
        weight = name.partition("=")[2]
        assert hparams["loss.perceptual_weight"] == float(weight)  # one numeric type for 0, 0.25, 0.5 and 1
        expected = json.loads((jobs[weight] / "metrics.json").read_text())
        assert hparams["optim.lr"] == pytest.approx(DEMO_LR)  # experiment=demo's learning rate
        assert hparams["model.net.base_channels"] == "4" and hparams["seed"] == "42"  # whole numbers, not 4.000
        for metric in ("val/psnr", "val/ssim", "val/loss", "test/psnr", "best_epoch"):
            assert metrics[readable_tag(metric)] == pytest.approx(expected[metric])
        assert_logged_once_with_images_beside_scalars(jobs[weight])
    shown_hparams, shown_metrics = hparams_columns(sweep)
    assert shown_hparams[0] == "loss.perceptual_weight"
    assert shown_metrics[:3] == ["val/psnr", "test/psnr", "z_run/best_epoch"]


@pytest.mark.parametrize("owner", ["a finished run", "a live run"])
def test_a_sweep_job_refused_its_dir_writes_nothing_into_it_and_the_sweep_goes_on(compose_cfg, tmp_path, owner,
                                                                                 capsys):
    """A sweep re-launched into its own sweep dir without resume= (or racing a live job): each job's dir holds another
    run. The job is refused before it trains, and even its failure record (job.json, error.txt) stays out."""
    cfg = compose_cfg()
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig().set_config(cfg)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"the other run's")
    (run / "job.json").write_text('{"status": "completed"}')

    def files() -> dict:
        return {str(p): p.read_bytes() for p in run.rglob("*") if p.is_file() and not p.name.startswith("owner.lock")}

    before = files()
    try:
        with run_dir_owner.claim_run_dir(run) if owner == "a live run" else contextlib.nullcontext():
            assert math.isnan(run_job(cfg))
        assert files() == before
        with pytest.raises(SystemExit) as exited:  # what scripts/train.py does after the multirun: not a success
            exit_if_sweep_failed()
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: 1 job(s) of the sweep did not run, their dirs hold other runs: The run dir "
                              f"{run} ")
        assert ("give a new hydra.sweep.dir" in err) == (owner == "a finished run")  # a live one: wait, or stop it
    finally:
        run_dir_owner.refused_jobs.clear()


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


@pytest.mark.slow
def test_optuna_search_runs_and_resumes_its_study(tmp_path, demo_root):
    sweep = tmp_path / "optuna"
    args = [*tiny(demo_root), "+trainer.fast_dev_run=true", "test=false", "hparams_search=optuna",
            f"hydra.sweep.dir={sweep}"]
    first = run_script("train", *args, "hydra.sweeper.n_trials=3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    trials = _trials(sweep / "optuna.db")
    assert [(n, state) for n, state, _ in trials] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]

    # each trial's value is the val/psnr of its job
    psnrs = sorted(json.loads(p.read_text())["val/psnr"] for p in sweep.glob("*/metrics.json"))
    assert sorted(value for _, _, value in trials) == pytest.approx(psnrs)
    assert len(list(sweep.glob("*/job.json"))) == 3
    # the search space is what varies: jobs are named after the sampled values, exactly as Optuna gave them
    assert OmegaConf.load(sweep / "sweep.yaml").swept == ["optim.lr", "loss.perceptual_weight"]
    names = [p.parent.name for p in sweep.glob("*/job.json")]
    assert all(re.fullmatch(r"lr=[-+.e\d]+,perceptual_weight=[-+.e\d]+", name) for name in names), names

    second = run_script("train", *args, "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Using an existing study" in second.stderr
    assert len(_trials(sweep / "optuna.db")) == 4
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(row["status"] == "completed" for row in rows)
    assert {"optim.lr", "loss.perceptual_weight"} <= set(rows[0])
    assert all(1e-5 <= float(row["optim.lr"]) <= 1e-2 and not math.isnan(float(row["val/psnr"])) for row in rows)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep_job(tmp_path, demo_root):
    sweep = tmp_path / "submitit"
    result = train_script("-m", *tiny(demo_root), "+trainer.fast_dev_run=true", "test=false",
                          "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                          "loss.perceptual_weight=0.5", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    job = sweep / "0"  # nothing varies in this one-job sweep: the job is numbered, as Hydra does
    record = json.loads((job / "job.json").read_text())
    assert record["status"] == "completed"
    assert record["value"] == pytest.approx(json.loads((job / "metrics.json").read_text())["val/psnr"])
    # the job ran in a process submitit started, which logged there
    logs = list((sweep / ".submitit").rglob("*_log.out"))
    errors = list((sweep / ".submitit").rglob("*_log.err"))
    assert logs and "Metrics written to" in "".join(p.read_text() for p in logs + errors)
    assert "completed" in (sweep / "summary.csv").read_text()


def test_the_summary_of_a_sweep_dir_lists_every_job_with_its_status(tmp_path):
    """SweepSummary on a sweep dir as the jobs leave it (the whole sweep runs in the slow grid-sweep test)."""
    from art_diffusion.run.sweeps.summary import SweepSummary

    sweep = tmp_path / "sweep"
    jobs = {"completed": ("lr=0.1", {"val/psnr": 20.5, "best_epoch": 2}, {"status": "completed", "wall_time_s": 3}),
            "failed": ("lr=0.2", None, {"status": "failed", "error": "ConfigError: no", "wall_time_s": 1}),
            "killed": ("lr=0.3", None, None)}
    for override, metrics, job in jobs.values():
        job_dir = sweep / override
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(f"- optim.{override}\n- experiment=demo\n")
        if metrics:
            (job_dir / "metrics.json").write_text(json.dumps(metrics))
        if job:
            (job_dir / "job.json").write_text(json.dumps(job))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    SweepSummary(metrics=["val/psnr"], plot_metric="val/psnr").on_multirun_end(config)
    with (sweep / "summary.csv").open() as f:
        rows = {row["optim.lr"]: row for row in csv.DictReader(f)}
    assert {lr: row["status"] for lr, row in rows.items()} == {"0.1": "completed", "0.2": "failed",
                                                              "0.3": "unfinished"}
    assert float(rows["0.1"]["val/psnr"]) == 20.5 and rows["0.1"]["best_epoch"] == "2"
    assert rows["0.2"]["error"] == "ConfigError: no" and "killed" in rows["0.3"]["error"]
    assert "experiment" not in rows["0.1"]  # only what varies is a column
    assert (sweep / "summary.md").read_text().count("\n") == 2 + 3
    assert (sweep / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_slurm_launcher_is_sized_from_the_trainer(compose_cfg):
    cfg = compose_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                      "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu"


def test_job_dirs_are_named_after_the_swept_values_only():
    fixed = ["experiment=demo", "data.root=/data/art images/train", "+trainer.limit_val_batches=1"]
    record = describe_sweep([*fixed, "loss.perceptual_weight=0,0.5", "data.batch_size=16,32"],
                            {"optim.lr": "tag(log, interval(1e-5, 1e-2))", "data.batch_size": "8"})
    assert record == {"swept": ["optim.lr", "loss.perceptual_weight", "data.batch_size"],
                      "integer": ["data.batch_size"], "fixed": fixed}
    job = [*fixed, "optim.lr=0.00012345678901234", "loss.perceptual_weight=0.5", "data.batch_size=16"]
    assert job_dirname(record["swept"], job, 3) == "lr=0.00012345678901234,perceptual_weight=0.5,batch_size=16"
    # keys are shortened only as far as they stay apart; a value is never cut, a path never nests
    keys = ["loss.weight", "optim.weight", "data.root"]
    name = job_dirname(keys, ["loss.weight=1", "optim.weight=2", "data.root=/a/b"], 0)
    assert name == "loss.weight=1,optim.weight=2,root=_a_b"
    assert job_dirname([], fixed, 7) == job_dirname(None, fixed, 7) == "7"  # nothing varies, or no record
    long = "0." + "1" * 196
    assert job_dirname(["a.x", "a.y"], [f"a.x={long}", "a.y=2"], 0) == f"{long},2"  # keys go first
    with pytest.raises(UserError, match="do not fit in a directory name"):
        job_dirname(["a.x", "a.y"], [f"a.x={long}", f"a.y={long}"], 0)


def test_resumed_run_shows_its_resumed_config_in_hparams_and_logs_each_value_once(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("evaluation"))
    (run / ".hydra").mkdir()  # what Hydra records when scripts/train.py starts a run
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=demo\n- model.net.base_channels=4\n")
    assert hparams_session_groups(run)["."][0]["trainer.max_epochs"] == "1"
    train(compose_train_cfg(run, f"resume={run}", "trainer.max_epochs=2", tiny=False))
    hparams, metrics = hparams_session_groups(run)["."]
    assert hparams["trainer.max_epochs"] == "2" and "resume" not in hparams
    assert hparams["experiment"] == "demo"  # the overrides it was started with are still its hparams
    assert metrics["val/psnr"] == pytest.approx(json.loads((run / "metrics.json").read_text())["val/psnr"])
    assert len(list(run.glob("*tfevents*.hparams"))) == 1
    assert_logged_once_with_images_beside_scalars(run)
