"""A run whose loss stops being a number stops there: one message, job.json "diverged", nothing non-finite saved;
every JSON file stays strict JSON."""

import json
import math

import pytest
import torch

from art_diffusion import DivergedError
from art_diffusion.checkpoints.atomic_io import AtomicCheckpointIO
from art_diffusion.run.train import train
from art_diffusion.storage import json_text
from tests.helpers.config import DEMO_LR
from tests.helpers.scripts import SHORT, run_script, tiny

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")

# a weight of 1e39 is a finite Python float but overflows float32: the very first loss is inf
OVERFLOW = "loss.mse_weight=1e39"


def test_a_non_finite_training_loss_stops_the_run_before_any_checkpoint(compose_cfg, tmp_path):
    cfg = compose_cfg(OVERFLOW, "+trainer.num_sanity_val_steps=0", output_dir=tmp_path / "run")
    hint = rf"optim.lr={DEMO_LR:g}, e.g. optim.lr={DEMO_LR / 10:g}"  # experiment=demo's lr, and a tenth of it
    with pytest.raises(DivergedError, match=r"train/loss = inf at epoch 0, batch 0 \(global step 1\)\. .*no "
                                            rf"checkpoint was saved.*{hint}"):
        train(cfg)
    assert not list((tmp_path / "run").glob("**/*.ckpt*"))


@pytest.mark.slow
def test_a_diverged_run_exits_with_one_line_and_says_so_in_job_json(tmp_path, demo_root):
    run = tmp_path / "run"
    result = run_script("train", *tiny(demo_root), *SHORT, OVERFLOW, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: Training diverged: val/loss = inf at epoch 0, sanity check")
    assert "Traceback" not in result.stderr
    job = json.loads((run / "job.json").read_text())
    assert job["status"] == "diverged" and "DivergedError" in job["error"]
    assert not list(run.glob("**/*.ckpt*")) and not (run / "metrics.json").exists()


def test_non_finite_weights_are_never_saved_and_the_old_file_stays(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, path)
    for poison in (math.nan, math.inf):
        with pytest.raises(DivergedError, match=r"Refusing to save .*last.ckpt: the weights hold NaN or inf \(w\)"):
            io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, poison, 2.0])}, "epoch": 1}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 0 and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_json_files_are_strict_json_with_null_for_a_missing_number(number):
    text = json_text({"val/psnr": number, "nested": [1.5, number], "ok": 2.0})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON")) == {
        "val/psnr": None, "nested": [1.5, None], "ok": 2.0}


@pytest.mark.slow
def test_a_sweep_none_of_whose_jobs_completed_exits_2(tmp_path, demo_root):
    sweep = tmp_path / "sweep"
    result = run_script("train", "-m", *tiny(demo_root), *SHORT, "loss.perceptual_weight=oops,1e39",
                        f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: no job of the sweep {sweep} completed "
                                                             "(2 jobs: diverged, failed)")
    statuses = {p.name: json.loads((p / "job.json").read_text())["status"] for p in sweep.iterdir() if p.is_dir()}
    assert statuses == {"perceptual_weight=oops": "failed", "perceptual_weight=1e+39": "diverged"}
