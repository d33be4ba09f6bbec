"""scripts/evaluate.py and the offline LPIPS: same numbers as torchmetrics, as the training's test metrics."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from art_diffusion import UserError
from art_diffusion.metrics.lpips import LPIPS
from art_diffusion.nets.vgg import load_vgg16_state
from art_diffusion.tools.evaluate import checkpoint_list, evaluate
from tests.helpers.config import CONF_DIR
from tests.helpers.scripts import run_script

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*weights_only.*")


def test_lpips_equals_torchmetrics_on_the_same_backbone(monkeypatch):
    import torchmetrics.functional.image.lpips as tm_lpips
    from torchmetrics.image import LearnedPerceptualImagePatchSimilarity
    from torchvision.models.vgg import cfgs, make_layers

    state = load_vgg16_state("random", 31)

    def backbone(net: str, pretrained: bool = False):  # what torchvision's download would give, from our weights
        features = make_layers(cfgs["D"])
        features.load_state_dict(state)
        return features

    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", backbone)
    reference = LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=True, reduction="sum")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 40, 56, generator=generator)
    y = (x + 0.2 * torch.randn(x.shape, generator=generator)).clamp(0, 1)

    ours = LPIPS("random")(x, y)
    assert ours.shape == (3,)
    for i in range(3):
        assert float(ours[i]) == pytest.approx(float(reference(x[i:i + 1], y[i:i + 1])), rel=1e-5)
        reference.reset()
    assert float(LPIPS("random")(x, x).abs().max()) < 1e-6


@pytest.mark.slow
def test_cli_compares_checkpoints_on_their_test_split(tiny_run, tmp_path):
    checkpoints = tiny_run / "checkpoints"
    result = run_script("evaluate", f"ckpt_path=[{checkpoints / 'best.ckpt'},{checkpoints / 'last.ckpt'}]",
                        "lpips.vgg_weights=random", "device=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tiny_run / "evaluation" / "metrics.json").read_text())
    scores = report["checkpoints"][str(checkpoints / "best.ckpt")]
    assert set(scores) == {"mse", "psnr", "ssim", "perceptual", "lpips", "images", "skipped"}
    assert str(checkpoints / "last.ckpt") in report["checkpoints"]
    header = next(line for line in result.stdout.splitlines() if line.startswith("metric"))
    assert "best.ckpt" in header and "last.ckpt" in header
    assert scores["psnr"] >= 10 * np.log10(1 / scores["mse"])  # mean of per-image PSNRs (Jensen)
    assert 0 <= scores["lpips"] and scores["skipped"] == 0
    # the same test split and the same distances as trainer.test() at the end of training (mean over images)
    trained = json.loads((tiny_run / "metrics.json").read_text())
    assert scores["perceptual"] == pytest.approx(trained["test/perceptual"], rel=1e-4)
    assert scores["ssim"] == pytest.approx(trained["test/ssim"], rel=1e-4)


def test_folder_evaluation_skips_and_counts_broken_files(tiny_run, tmp_path):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(97, 131), (40, 40), (64, 48)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}",
                                             f"data.root={tmp_path}", "data.batch_size=2", "lpips.enabled=false",
                                             f"output_dir={tmp_path / 'eval'}", "device=cpu"])
    (scores,) = evaluate(cfg).values()
    assert (scores["images"], scores["skipped"]) == (3, 1)
    assert "lpips" not in scores
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["data"] == str(tmp_path)


def _sweep_dir(root, jobs: dict[str, str]):
    """A sweep dir as its jobs leave it: ``{job name: "ok" | "failed" | "running"}``."""
    for name, state in jobs.items():
        (root / name / ".hydra").mkdir(parents=True)
        (root / name / ".hydra" / "overrides.yaml").write_text(f"- {name}\n")
        if state == "ok":
            (root / name / "checkpoints").mkdir()
            (root / name / "checkpoints" / "best.ckpt").write_bytes(b"checkpoint")
            (root / name / "job.json").write_text(json.dumps({"status": "completed", "error": None}))
        elif state == "failed":
            (root / name / "job.json").write_text(json.dumps({"status": "failed", "error": "DataError: no images"}))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_a_sweep_dir_names_the_jobs_it_skips_and_says_when_every_job_failed(tmp_path, caplog):
    sweep = _sweep_dir(tmp_path / "sweep", {"lr=0.1": "ok", "lr=1": "failed", "lr=10": "running"})
    assert checkpoint_list(str(sweep)) == [str(sweep / "lr=0.1" / "checkpoints" / "best.ckpt")]
    (line,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "Evaluating 1 of the 3 jobs" in line and "lr=1 (failed: DataError: no images)" in line
    assert "lr=10 (no checkpoints/best.ckpt and no job.json" in line

    failed = _sweep_dir(tmp_path / "failed", {"lr=0.1": "failed", "lr=1": "failed"})
    with pytest.raises(UserError, match=r"a sweep dir of 2 job\(s\) where every job failed.*lr=0.1: failed: "
                                        r"DataError: no images"):
        checkpoint_list(str(failed))
    with pytest.raises(UserError, match="neither a run dir"):
        checkpoint_list(str(tmp_path / "failed" / "lr=1" / ".hydra"))


def _evaluate_script(*args: str, cwd) -> subprocess.CompletedProcess:
    return run_script("evaluate", *args, "lpips.enabled=false", "device=cpu", cwd=cwd)


@pytest.mark.slow  # runs the script end to end (in-process: run_script)
def test_cli_takes_checkpoints_of_sweep_jobs_whose_paths_hold_equals_and_commas(tiny_run, tmp_path):
    sweep = tmp_path / "sweep"
    jobs = [sweep / "lr=0.001,perceptual_weight=0", sweep / "lr=0.01,perceptual_weight=1"]
    for job in jobs:
        (job / "checkpoints").mkdir(parents=True)
        shutil.copy(tiny_run / "checkpoints" / "best.ckpt", job / "checkpoints" / "best.ckpt")
    best = [str(job / "checkpoints" / "best.ckpt") for job in jobs]

    # as a user types it in a shell: a list of double-quoted paths inside single quotes
    listed = _evaluate_script(f'ckpt_path=["{best[0]}","{best[1]}"]', f"output_dir={tmp_path / 'listed'}",
                              cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert sorted(json.loads((tmp_path / "listed" / "metrics.json").read_text())["checkpoints"]) == best
    # the sweep dir alone: every job's best.ckpt, the report in <sweep dir>/evaluation
    whole = _evaluate_script(f"ckpt_path={sweep}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert sorted(json.loads((sweep / "evaluation" / "metrics.json").read_text())["checkpoints"]) == best
    assert "lr=0.001,perceptual_weight=0/best.ckpt" in whole.stdout
    # unquoted, Hydra's grammar cannot read it: one line says how to quote, before anything runs
    unquoted = _evaluate_script(f"ckpt_path=[{best[0]},{best[1]}]", cwd=tmp_path)
    assert unquoted.returncode == 2 and "Hydra needs a value holding '=' or ',' in quotes" in unquoted.stderr
    assert len(unquoted.stderr.strip().splitlines()) == 1
    # a sweep where every job failed: one line that says so, and no evaluation dir left in it
    failed = _sweep_dir(tmp_path / "failed", {"lr=1": "failed", "lr=2": "failed"})
    refused = _evaluate_script(f"ckpt_path={failed}", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "every job failed" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (failed / "evaluation").exists()
