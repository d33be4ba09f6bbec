"""Checkpoints made hostile: every path-like string of the stored config, the names of files and folders it gives and
the class names replaced by absolute paths and ``..`` traversals. Every tool that reads a checkpoint, and train.py
resuming or starting from one, runs on them under the write audit (tests/helpers/write_audit.py): each either works
or stops with one ``error:`` line, and nothing is written outside the roots the command declares."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from art_diffusion.checkpoints import CONFIG_KEY
from art_diffusion.lightning.diffusion_module import CLASS_NAMES_KEY
from art_diffusion.run.train import train
from tests.helpers import write_audit
from tests.helpers.config import REPO, TINY, compose_train_cfg
from tests.helpers.messy_folder import jpeg_bytes, pattern
from tests.helpers.scripts import script_env

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")]

NAME_KEYS = ("filename", "name", "version", "tag")


def _hostile(node, evil: Path, mode: str, key: str = ""):
    """``node`` with every path-like string (and every file or folder name it gives) pointing into ``evil``."""
    if isinstance(node, dict):
        return {k: v if k == "_target_" else _hostile(v, evil, mode, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_hostile(v, evil, mode, key) for v in node]
    if isinstance(node, str) and ("/" in node or key in NAME_KEYS or mode == "every string"):
        return str(evil / "abs") if mode == "absolute" else "../../../../../../" + str(evil).lstrip("/") + "/trav"
    return node


def _make_hostile(run: Path, copy: Path, evil: Path, mode: str) -> Path:
    shutil.copytree(run, copy)
    for path in (copy / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        checkpoint[CONFIG_KEY] = _hostile(checkpoint[CONFIG_KEY], evil, mode)
        if CLASS_NAMES_KEY in checkpoint:  # names a folder could have, and ones it could not
            names = ["..", "/", str(evil / "cls"), "../../" + str(evil).lstrip("/"), "a/b", ".", "ok"]
            checkpoint[CLASS_NAMES_KEY] = names[: len(checkpoint[CLASS_NAMES_KEY])]
        torch.save(checkpoint, path)
    return copy


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trained")
    runs = {"recon": base / "recon", "ddpm": base / "ddpm", "demo": demo_root}
    train(compose_train_cfg(runs["recon"], f"data.root={demo_root}", "trainer.precision=32-true"))
    train(compose_train_cfg(runs["ddpm"], f"data.root={demo_root}", "model=ddpm", "model.schedule.timesteps=20",
                            "model.num_classes=7", "callbacks.samples.num_images=2", "callbacks.samples.steps=2",
                            "test=false"))
    GlobalHydra.instance().clear()
    return runs


def _run(script: str, args: list[str], cwd: Path, audit: Path, scratch: Path, cache: Path):
    env = {**script_env(), "ART_DIFFUSION_CACHE": str(cache), "TMPDIR": str(scratch),
           "MPLCONFIGDIR": str(scratch / "mpl"), "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor")}
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{script}.py"), *args], cwd=cwd,
                          env=write_audit.audited_env(env, audit), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("mode", ["absolute", "traversal", "every string"])
def test_tools_on_hostile_checkpoints_write_only_where_the_command_says(trained, tmp_path, mode):
    evil, cwd, scratch, cache = (tmp_path / name for name in ("evil", "cwd", "scratch", "cache"))
    for folder in (cwd, scratch, cache):
        folder.mkdir()
    (cwd / "images").mkdir()
    (cwd / "images" / "a.jpg").write_bytes(jpeg_bytes(pattern(48, 40)))
    recon = _make_hostile(trained["recon"], tmp_path / "recon", evil, mode)
    ddpm = _make_hostile(trained["ddpm"], tmp_path / "ddpm", evil, mode)
    tiny_eval = ["device=cpu", "lpips.vgg_weights=random", "generative.vgg_weights=random", "generative.num_images=2",
                 "generative.steps=2", "generative.batch_size=2"]
    commands = {  # label: (script, args, the roots it declares)
        "generate": ("generate", [f"ckpt_path={ddpm / 'checkpoints' / 'last.ckpt'}", "class_name=all",
                                  f"output_dir={tmp_path / 'gen'}", "device=cpu", "num_images=2", "batch_size=2",
                                  "steps=2", "progress=false"], [tmp_path / "gen"]),
        "reconstruct": ("reconstruct", [f"ckpt_path={recon / 'checkpoints' / 'best.ckpt'}", f"input={cwd / 'images'}",
                                        f"output_dir={tmp_path / 'rec'}", "device=cpu"], [tmp_path / "rec"]),
        "evaluate": ("evaluate", [f"ckpt_path={recon / 'checkpoints' / 'best.ckpt'}",
                                  f"output_dir={tmp_path / 'eval'}", *tiny_eval], [tmp_path / "eval"]),
        "evaluate ddpm": ("evaluate", [f"ckpt_path={ddpm / 'checkpoints' / 'last.ckpt'}",
                                       f"output_dir={tmp_path / 'eval-ddpm'}", *tiny_eval], [tmp_path / "eval-ddpm"]),
        "resume": ("train", [f"resume={recon}", "trainer.max_epochs=2", "data.num_workers=0"], [recon]),
        "resume ddpm": ("train", [f"resume={ddpm}", "trainer.max_epochs=2", "data.num_workers=0"], [ddpm]),
        "from weights": ("train", [f"ckpt_path={recon / 'checkpoints' / 'last.ckpt'}", *TINY,
                                   f"data.root={trained['demo']}", f"hydra.run.dir={tmp_path / 'new'}"],
                         [tmp_path / "new"]),
    }
    problems = {}
    for label, (script, args, roots) in commands.items():
        audit = tmp_path / f"{label}.writes"
        result = _run(script, args, cwd, audit, scratch, cache)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        if result.returncode not in (0, 2) or (result.returncode == 2 and len(errors) != 1) or \
                "Traceback" in result.stderr:
            problems[label] = f"exit {result.returncode}: {result.stderr[-1500:]}"
        escaped = write_audit.outside(write_audit.read(audit), [*roots, cache, scratch], cwd=cwd)
        if escaped:
            problems[label] = f"wrote outside {roots}: {escaped[:6]}"
    assert problems == {}, "\n".join(f"{label}: {problem}" for label, problem in problems.items())
    assert not evil.exists() and not list(Path("/").glob(str(evil).lstrip("/") + "*"))
    assert not [p for p in cwd.rglob("*") if p.parent != cwd / "images" and p != cwd / "images"]  # nothing in cwd
