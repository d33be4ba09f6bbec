"""Every logger option with a real Trainer: metrics and image grids read back from the files each one writes.

TensorBoard's event files are read with its own EventAccumulator; its Time Series tab sorts cards by tag and
groups them by the part before the first "/", so sorted tags are the order a user sees.
"""

from __future__ import annotations

import csv

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from art_diffusion.run.train import train

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*", "ignore::DeprecationWarning",
                               "ignore::FutureWarning", "ignore::UserWarning"),
]

# 4 images of 32 px per row: the loggers get them 8x enlarged (256 px), the PNG files keep 32 px
LOGGED = (4 * 258 + 2, 2 * 258 + 2)
NATIVE = (4 * 34 + 2, 2 * 34 + 2)


def _tensorboard(run) -> EventAccumulator:
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("logger", ["csv", "many"])
def test_csv_and_many_loggers_write_metrics_and_the_grids_stay_png(compose_cfg, tmp_path, logger):
    run = tmp_path / "run"
    train(compose_cfg(f"logger={logger}", "trainer.max_epochs=2"))

    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = [row for row in rows if row["val/loss"]]
    assert [row["epoch"] for row in val[:2]] == ["0", "1"] and float(val[0]["val/psnr"]) > 0
    assert any(row["train/loss_epoch"] for row in rows) and any(row["test/psnr"] for row in rows)
    for epoch in ("000", "001"):
        assert Image.open(run / "reconstructions" / f"epoch_{epoch}.png").size == NATIVE
    assert bool(list(run.glob("events.out.tfevents.*"))) == (logger == "many")
    if logger == "many":
        images = _tensorboard(run).Images("visuals/reconstructions")
        assert len(images) == 2 and (images[0].width, images[0].height) == LOGGED


def test_tensorboard_shows_losses_and_metrics_first_and_grids_at_a_readable_size(compose_cfg, tmp_path):
    run = tmp_path / "run"
    metrics = train(compose_cfg())
    events = _tensorboard(run)
    tags = sorted(events.Tags()["scalars"] + events.Tags()["images"])
    groups = list(dict.fromkeys(tag.split("/", 1)[0] for tag in tags))  # in the order TensorBoard shows them
    assert groups == ["test", "train", "val", "visuals", "z_run"]
    assert {"z_run/epoch", "z_run/best_epoch", "z_run/lr-Adam"} <= set(tags)
    assert "best_epoch" in metrics  # the name in metrics.json is unchanged
    image = events.Images("visuals/reconstructions")[0]
    assert (image.width, image.height) == LOGGED
    assert Image.open(run / "reconstructions" / "epoch_000.png").size == NATIVE


def test_logged_size_zero_logs_the_native_grid(compose_cfg, tmp_path):
    train(compose_cfg("callbacks.reconstructions.logged_size=0", "+trainer.limit_train_batches=1"))
    image = _tensorboard(tmp_path / "run").Images("visuals/reconstructions")[0]
    assert (image.width, image.height) == NATIVE


@pytest.mark.slow  # wandb starts its service process
def test_wandb_logger_works_offline_with_metrics_and_grids(compose_cfg, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="logger=wandb needs the optional wandb extra")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    try:
        train(compose_cfg("logger=wandb", "+trainer.limit_train_batches=1"))
    finally:
        wandb.finish()
        wandb.teardown()  # stops W&B's service process, which writes the run's records to disk
    (offline,) = (run / "wandb").glob("offline-run-*")
    records = next(offline.glob("*.wandb")).read_bytes()
    assert b"val/loss" in records and b"test/psnr" in records
    (grid,) = (offline / "files" / "media" / "images" / "visuals").glob("reconstructions_*.png")
    assert Image.open(grid).size == LOGGED


@pytest.mark.slow  # builds an SQLite tracking store
def test_mlflow_logger_stores_metrics_and_grids_in_the_run_dir(compose_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="logger=mlflow needs the optional mlflow extra")
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    train(compose_cfg("logger=mlflow", "+trainer.limit_train_batches=1"))
    client = MlflowClient(f"sqlite:///{run / 'mlflow' / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("art-diffusion").experiment_id])
    assert {"val/loss", "val/psnr", "test/psnr"} <= set(found.data.metrics)
    (grid,) = (path for path in (run / "mlflow" / "artifacts").rglob("*.png") if "reconstructions" in path.name)
    assert Image.open(grid).size == LOGGED


@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_a_logger_whose_package_is_missing_stops_with_one_line(monkeypatch, capsys, logger):
    from art_diffusion.run import cli

    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)  # as if the extra were not installed
    with pytest.raises(SystemExit) as stop:
        cli.prepare_cli(["experiment=demo", f"logger={logger}"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f'pip install -e ".[{logger}]".' in line and "[dev]" not in line  # not part of [dev]: too heavy
