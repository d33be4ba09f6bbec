"""Checkpoints made hostile: every path-like string of the stored config, the names of files and folders it gives and
the class names replaced by absolute paths and ``..`` traversals. Every tool that reads a checkpoint, and train.py
resuming or starting from one, runs on them under the write audit (tests/helpers/write_audit.py): each either works
or stops with one ``error:`` line, and nothing is written outside the roots the command declares."""

from __future__ import annotations

import json
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
READ_KEYS = ("root", "val_root")  # the data it reads: kept in the "paths and names" variant, so a resume can run


def _hostile(node, evil: Path, key: str = "", every: bool = False, count: list | None = None):
    """``node`` with every path-like string (and every file or folder name it gives; with ``every``, every string)
    pointing into ``evil``: by turns an absolute path and a ``..`` traversal."""
    count = [0] if count is None else count
    if isinstance(node, dict):
        return {k: v if k == "_target_" else _hostile(v, evil, k, every, count) for k, v in node.items()}
    if isinstance(node, list):
        return [_hostile(v, evil, key, every, count) for v in node]
    # a stored path is absolute (metric names such as val/loss also hold a "/": only the every-string variant)
    if isinstance(node, str) and (every or (node.startswith("/") and key not in READ_KEYS) or key in NAME_KEYS):
        count[0] += 1
        return str(evil / "abs") if count[0] % 2 else "../../../../../../" + str(evil).lstrip("/") + "/trav"
    return node


def _make_hostile(run: Path, copy: Path, evil: Path, every: bool) -> Path:
    shutil.copytree(run, copy)
    for path in (copy / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        checkpoint[CONFIG_KEY] = _hostile(checkpoint[CONFIG_KEY], evil, every=every)
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


def _run_all(commands: dict, cwd: Path, tmp_path: Path) -> tuple[list[dict], dict]:
    """Every command in one process, each as ``python scripts/X.py`` (tests/helpers/readme_runner.py), under the
    write audit; returns each command's result and its writes."""
    entries = [{"script": str(REPO / "scripts" / f"{script}.py"), "args": args}
               for script, args, _ in commands.values()]
    (tmp_path / "commands.json").write_text(json.dumps(entries))
    scratch = tmp_path / "scratch"
    env = {**script_env(), "ART_DIFFUSION_CACHE": str(tmp_path / "cache"), "TMPDIR": str(scratch),
           "MPLCONFIGDIR": str(scratch / "mpl"), "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"),
           write_audit.LOG_ENV: str(tmp_path / "writes.jsonl")}
    runner = REPO / "tests" / "helpers" / "readme_runner.py"
    subprocess.run([sys.executable, str(runner), str(tmp_path / "commands.json"), str(tmp_path / "results.json")],
                   cwd=cwd, env=env, timeout=1200, check=False)
    return json.loads((tmp_path / "results.json").read_text()), write_audit.read_sections(tmp_path / "writes.jsonl")


@pytest.mark.parametrize("every", [False, True], ids=["paths and names", "every string"])
def test_tools_on_hostile_checkpoints_write_only_where_the_command_says(trained, tmp_path, every):
    evil, cwd, scratch, cache = (tmp_path / name for name in ("evil", "cwd", "scratch", "cache"))
    for folder in (cwd, scratch, cache):
        folder.mkdir()
    (cwd / "images").mkdir()
    (cwd / "images" / "a.jpg").write_bytes(jpeg_bytes(pattern(48, 40)))
    recon = _make_hostile(trained["recon"], tmp_path / "recon", evil, every)
    ddpm = _make_hostile(trained["ddpm"], tmp_path / "ddpm", evil, every)
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
    results, writes = _run_all(commands, cwd, tmp_path)
    assert len(results) == len(commands), "the runner stopped early"
    problems = {}
    for index, (label, (_, _, roots)) in enumerate(commands.items()):
        result = results[index]
        errors = [line for line in result["stderr"].splitlines() if line.startswith("error: ")]
        if result["returncode"] not in (0, 2) or (result["returncode"] == 2 and len(errors) != 1) or \
                "Traceback" in result["stderr"]:
            problems[label] = f"exit {result['returncode']}: {result['stderr'][-1500:]}"
        escaped = write_audit.outside(writes.get(str(index), []), [*roots, cache, scratch], cwd=cwd)
        if escaped:
            problems[label] = f"wrote outside {roots}: {escaped[:6]}"
    assert problems == {}, "\n".join(f"{label}: {problem}" for label, problem in problems.items())
    assert not evil.exists() and not list(Path("/").glob(str(evil).lstrip("/") + "*"))
    assert not [p for p in cwd.rglob("*") if p.parent != cwd / "images" and p != cwd / "images"]  # nothing in cwd
    if not every:  # where it writes was recomputed, so it trains; the class grids are named safely in output_dir
        assert results[list(commands).index("resume")]["returncode"] == 0, results[4]["stderr"][-2000:]
        assert (recon / "checkpoints" / "last.ckpt").stat().st_mtime > (recon / "checkpoints" / "best.ckpt").stat(
        ).st_mtime or torch.load(recon / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
        gen = tmp_path / "gen"
        assert (gen / "grid_...png").is_file() and (gen / "grid_a%2Fb.png").is_file()  # class names "..", "a/b"
        assert (gen / "images" / "%2E.").is_dir() and (gen / "images" / "%2F").is_dir()  # "..", "/"
