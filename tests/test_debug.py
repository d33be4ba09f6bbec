"""The debug config group: each option composes with experiment=demo and runs one tiny fit, doing what it says."""

from __future__ import annotations

from collections import Counter

import lightning as L
import pytest
import torch

from art_diffusion.run.train import train
from tests.helpers.config import CONF_DIR, TINY, compose_train_cfg
from tests.helpers.scripts import run_script, tiny

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*", "ignore:.*overfit_batches.*"),
]

DEBUG_OPTIONS = sorted(p.stem for p in (CONF_DIR / "debug").glob("*.yaml"))


class BatchProbe(L.Callback):
    """Records, for every training batch, its epoch and whether autograd's anomaly detection is on."""

    epochs: list[int] = []
    anomaly: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        BatchProbe.epochs.append(trainer.current_epoch)
        BatchProbe.anomaly.append(torch.is_anomaly_enabled())


def test_the_debug_group_has_the_options_the_readme_names():
    assert DEBUG_OPTIONS == ["anomaly", "default", "fdr", "limit", "overfit", "profiler"]


EPOCHS = {"default": 1, "anomaly": 1, "overfit": 3}  # these run the configured length (or 50 epochs): cut it


@pytest.mark.parametrize("option", DEBUG_OPTIONS)
def test_every_debug_option_runs_a_tiny_fit_without_checkpoints(tmp_path, demo_root, option):
    # TINY without its max_epochs=1, so fdr, limit and profiler run their own; batches of 2 images
    overrides = [o for o in TINY if not o.startswith("trainer.max_epochs")] + [f"data.root={demo_root}"]
    if option in EPOCHS:
        overrides.append(f"trainer.max_epochs={EPOCHS[option]}")
    run = tmp_path / "run"
    cfg = compose_train_cfg(run, *overrides, f"debug={option}", "data.batch_size=2",
                            "+callbacks.probe._target_=tests.test_debug.BatchProbe",
                            "trusted_classes=[tests.test_debug.BatchProbe]", tiny=False)
    BatchProbe.epochs, BatchProbe.anomaly = [], []
    metrics = train(cfg)

    assert "val/loss" in metrics and "test/loss" in metrics
    assert not list(run.rglob("*.ckpt"))  # no checkpoint at all in a debug run
    assert cfg.data.num_workers == 0 and cfg.hydra.run.dir.startswith("outputs/debug/")
    assert all(BatchProbe.anomaly) == (option == "anomaly")
    batches_per_epoch = Counter(BatchProbe.epochs)
    if option == "fdr":  # one batch, no logger
        assert batches_per_epoch == {0: 1} and not list(run.glob("*tfevents*"))
    if option == "overfit":  # the same 2 batches every epoch
        assert batches_per_epoch == {0: 2, 1: 2, 2: 2}
    if option in ("limit", "profiler"):  # 3 epochs of 4 batches
        assert batches_per_epoch == {0: 4, 1: 4, 2: 4}
    if option in ("default", "anomaly"):  # a whole epoch
        assert list(batches_per_epoch) == [0] and batches_per_epoch[0] > 4
    if option == "profiler":
        assert (run / "fit-profiler.txt").read_text().startswith("FIT Profiler Report")
        assert "run_training_batch" in (run / "fit-profiler.txt").read_text()
        assert (run / "test-profiler.txt").exists()


@pytest.mark.slow
def test_debug_run_from_the_command_line_prints_and_saves_the_config_tree(tmp_path, demo_root):
    result = run_script("train", *tiny(demo_root), "debug=fdr", "model.net.base_channels=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    (run,) = (tmp_path / "outputs" / "debug").glob("*/*")  # outputs/debug/<date>/<time>
    assert (run / "metrics.json").exists() and not list(run.rglob("*.ckpt"))
    saved = (run / "config_tree.log").read_text()
    assert saved.startswith("CONFIG")
    for text in ("├── data", "├── model", "base_channels: 5", "overrides given", "model.net.base_channels=5"):
        assert text in saved and text in result.stdout  # printed too
    assert f"root: {demo_root}" in saved  # interpolations resolved
    order = [saved.index(text) for text in ("├── data", "├── model", "overrides given", "debug=fdr")]
    assert order == sorted(order)


def test_print_config_false_prints_and_saves_nothing(compose_cfg, tmp_path, capsys):
    train(compose_cfg("extras.print_config=false", "+trainer.fast_dev_run=true"))
    assert not (tmp_path / "run" / "config_tree.log").exists() and "CONFIG" not in capsys.readouterr().out
    train(compose_cfg("+trainer.fast_dev_run=true"))
    assert (tmp_path / "run" / "config_tree.log").exists() and "CONFIG" in capsys.readouterr().out
