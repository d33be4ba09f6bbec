"""scripts/generate.py end to end on a tiny model=ddpm checkpoint trained through the real config."""

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from art_diffusion.tools.generate import generate
from tests.helpers.config import CONF_DIR, compose_train_cfg
from tests.helpers.scripts import run_script

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*"),
]


def test_the_metrics_a_ddpm_run_is_said_to_log_are_the_ones_it_logs(ddpm_checkpoint, tmp_path):
    from art_diffusion.run.validate import logged_metrics

    run = ddpm_checkpoint.parents[1]
    written = {k for k in json.loads((run / "metrics.json").read_text()) if k.startswith("val/")}
    said = {k for k in logged_metrics(compose_train_cfg(tmp_path, "model=ddpm")) if k.startswith("val/")}
    assert said == written


def generate_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=["progress=false", "device=cpu", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def pixels(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted((folder / "images").glob("*.png"))])


@pytest.mark.slow  # runs the script end to end (in-process: run_script)
def test_generate_script_writes_pngs_and_a_grid_per_class_with_dpm_solver(ddpm_checkpoint, tmp_path):
    out = tmp_path / "gen"
    args = [f"ckpt_path={ddpm_checkpoint}", "num_images=5", "batch_size=3", "sampler=dpm++2m", "steps=4", "seed=0",
            "class_name=all", f"output_dir={out}", "device=cpu"]
    result = run_script("generate", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    classes = sorted(p.name for p in (out / "images").iterdir())
    assert len(classes) == 7 and "landscapes" in classes
    assert sorted(p.name for p in (out / "images" / "landscapes").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    assert np.asarray(Image.open(out / "images" / "landscapes" / "00004.png")).shape == (32, 32, 3)
    assert sorted(p.name for p in out.glob("grid_*.png")) == [f"grid_{c}.png" for c in classes]
    assert Image.open(out / "grid_landscapes.png").size == (3 * 34 + 2, 2 * 34 + 2)  # 5 images, 3 per row
    # the log is in output_dir, and nothing (no outputs/generate/<date>/<time>/, no .hydra/) in the working dir
    assert (out / "generate.log").exists() and not (out / ".hydra").exists()
    refused = run_script("generate", *args[:-3], "class_name=portraits", f"output_dir={tmp_path / 'refused'}",
                         "device=cpu", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error:"), refused.stderr[-2000:]
    default = run_script("generate", f"ckpt_path={tmp_path / 'missing.ckpt'}", cwd=tmp_path)
    assert default.returncode == 2, default.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]


def test_same_seed_same_images_for_both_samplers(ddpm_checkpoint, tmp_path):
    def run(name, *overrides):
        generate(generate_cfg(f"ckpt_path={ddpm_checkpoint}", "num_images=3", "batch_size=2",
                              f"output_dir={tmp_path / name}", *overrides))
        return pixels(tmp_path / name)

    ddim = run("a", "sampler=ddim", "steps=3", "seed=0")
    assert np.array_equal(ddim, run("b", "sampler=ddim", "steps=3", "seed=0"))
    assert not np.array_equal(ddim, run("c", "sampler=ddim", "steps=3", "seed=1"))
    ddpm = run("d", "sampler=ddpm", "seed=0", "class_name=geometric")  # the full 20-step chain, guided
    assert np.array_equal(ddpm, run("e", "sampler=ddpm", "seed=0", "class_name=geometric"))
    assert not np.array_equal(ddpm, ddim)
    dpm = run("f", "sampler=dpm++2m", "steps=3", "seed=0")
    assert np.array_equal(dpm, run("g", "sampler=dpm++2m", "steps=3", "seed=0"))
    assert not np.array_equal(dpm, ddim)


def test_generate_refuses_what_it_cannot_use(ddpm_checkpoint, tiny_run, tmp_path):
    with pytest.raises(ValueError, match="knows"):
        generate(generate_cfg(f"ckpt_path={ddpm_checkpoint}", "class_name=portraits", f"output_dir={tmp_path}"))
    with pytest.raises(FileNotFoundError, match="model=ddpm"):
        generate(generate_cfg(f"ckpt_path={tmp_path / 'missing.ckpt'}", f"output_dir={tmp_path}"))
    # the default model: a ConvDiffusionModel
    with pytest.raises(ValueError, match="reconstructs images"):
        generate(generate_cfg(f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"output_dir={tmp_path}"))


@pytest.mark.slow  # VGG16 at 224 px on every image
def test_evaluate_reports_fd_vgg_for_a_generative_checkpoint(ddpm_checkpoint, tmp_path):
    from art_diffusion.tools.evaluate import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt_path={ddpm_checkpoint}", f"output_dir={tmp_path / 'eval'}",
                                             "device=cpu", "generative.num_images=6", "generative.batch_size=3",
                                             "generative.steps=2", "generative.vgg_weights=random"],
                      return_hydra_config=False)
    GlobalHydra.instance().clear()
    results = evaluate(cfg)[str(ddpm_checkpoint)]
    assert results["images"] == 6 and results["fd_vgg"] > 0
    # without data.root the real images are the run's held-out test split (10 % of 28), as the table says
    assert 0 < results["real_images"] <= 3
    assert "fd_vgg" in (tmp_path / "eval" / "metrics.json").read_text()
