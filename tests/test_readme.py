"""Every ``python scripts/...`` command in the code blocks of README.md and of the topic pages under docs/
(``DOC_PAGES``) works as a user runs it.

The commands are read from the pages, not copied here, so a command added later is run too. Each is run through
its real script (``tests/helpers/readme_runner.py``: one Python process runs them in order, each as
``python scripts/X.py`` would) with tiny-size overrides appended, in a scratch directory laid out like a user's:
``my_art/`` and ``../shared/data/art-dev`` exist there, ``/data/...`` folders are replaced by a tiny Kaggle-like
ImageFolder (a validation_set by one of its own: a shared one is refused), and a placeholder checkpoint
(``outputs/<date>/<time>/checkpoints/best.ckpt``, ``CKPT``, ``...``) is the one an earlier README command of the
right kind trained. A command with something this file does not know how to stand in for fails loudly with the
command named: teach :func:`adapt` about it.

A few user mistakes run through the same scripts and must end in one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import write_audit
from tests.helpers.config import DOC_PAGES, REPO
from tests.helpers.messy_folder import jpeg_bytes, pattern
from tests.helpers.write_audit import LOG_ENV

pytestmark = pytest.mark.slow  # runs every command of the docs through its script

SCRIPTS = ("train", "reconstruct", "evaluate", "generate", "fd_vgg", "export")
KAGGLE_CLASSES = ("drawings", "engraving", "iconography", "painting", "sculpture")
GPU_ONLY = {"trainer": "cpu", "device": "cpu"}  # choices that need a GPU, run on the CPU here
DROPPED = ("trainer.devices", "trainer.num_nodes")  # GPU counts: one CPU process here
# Tiny sizes, appended to every command of a script (they win over the README's values of the same keys).
TINY = {
    "train": {"model.net.base_channels": "4", "loss.vgg_weights": "random", "data.image_size": "32",
              "data.batch_size": "4", "data.num_workers": "0", "trainer.max_epochs": "1",
              "trainer.enable_progress_bar": "false", "++trainer.limit_train_batches": "2",
              "++trainer.limit_val_batches": "1", "++trainer.limit_test_batches": "1",
              "callbacks.reconstructions.num_images": "2", "hydra.sweeper.n_trials": "1"},
    "ddpm": {"model.schedule.timesteps": "20", "callbacks.samples.steps": "2", "callbacks.samples.num_images": "2"},
    "demo": {"data.images_per_class": "4", "data.source_size": "48"},
    "reconstruct": {"device": "cpu", "batch_size": "4"},
    "evaluate": {"device": "cpu", "lpips.vgg_weights": "random", "generative.vgg_weights": "random",
                 "generative.num_images": "4", "generative.steps": "2", "generative.batch_size": "4"},
    "generate": {"device": "cpu", "num_images": "4", "batch_size": "4", "steps": "2", "progress": "false"},
    "fd_vgg": {"device": "cpu", "vgg_weights": "random", "input_size": "32", "max_images": "4", "batch_size": "4"},
    "export": {"card_samples": "4"},
}
# What a resumed run may be told (the rest of its config is the stored one).
RESUME_TINY = {"data.num_workers": "0", "trainer.enable_progress_bar": "false", "trainer.max_epochs": "2"}


def readme_commands() -> list[str]:
    """Every ``python scripts/...`` command of the code blocks of :data:`DOC_PAGES`, continuation lines joined."""
    blocks = [block for page in DOC_PAGES
              for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", (REPO / page).read_text(), re.S)]
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = re.sub(r"\s+#.*$", "", part).strip()
                if re.search(r"(^|\s)python scripts/", part):
                    commands.append(part)
    return list(dict.fromkeys(commands))  # a command shown on two pages runs once


class NotCovered(Exception):
    pass


def _trains(command: str, kind: str) -> bool:
    """Whether README ``command`` is a single training run (not a sweep, not a resume) of ``kind``."""
    # debug runs write no checkpoint
    if "scripts/train.py" not in command or re.search(r" -m |hparams_search=|resume=(?!auto)|debug=", command):
        return False
    ddpm, conditional = "model=ddpm" in command, "num_classes" in command
    return {"recon": not ddpm, "ddpm": ddpm and not conditional, "ddpm-cond": ddpm and conditional}[kind]


def _run_dir(commands: list[str], index: int) -> str:
    """Where README command ``index`` trains: its own hydra.run.dir, else the one :func:`adapt` gives it."""
    given = re.search(r"hydra\.run\.dir=(\S+)", commands[index])
    return given.group(1) if given else f"outputs/readme/{index:02d}"


def _producers(commands: list[str], upto: int, kind: str) -> list[str]:
    """The run dirs of the README commands before ``upto`` that train a checkpoint of ``kind``, latest first."""
    found = [_run_dir(commands, i) for i, c in enumerate(commands[:upto]) if _trains(c, kind)][::-1]
    if not found:
        raise NotCovered(f"no earlier README command trains the {kind} checkpoint it needs")
    return found


def adapt(commands: list[str], index: int, paths: dict[str, Path]) -> dict:
    """The runner entry of README command ``index``: its script, its arguments made tiny and local, its env."""
    command = commands[index]
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if words[:1] != ["python"] or not re.fullmatch(r"scripts/(\w+)\.py", words[1]):
        raise NotCovered("not a `python scripts/X.py` command")
    script = re.fullmatch(r"scripts/(\w+)\.py", words[1]).group(1)
    if script not in SCRIPTS:
        raise NotCovered(f"unknown script {script}")
    flags = [w for w in words[2:] if w.startswith("-")]
    overrides = dict(w.split("=", 1) for w in words[2:] if not w.startswith("-"))
    kind = "ddpm-cond" if "model.num_classes" in overrides or "class_name" in overrides else (
        "ddpm" if overrides.get("model") == "ddpm" or script == "generate" or overrides.get("ckpt_path") == "DDPM_CKPT"
        else "recon")

    def checkpoint(value: str) -> str:
        if re.fullmatch(r"outputs/[\w-]+/checkpoints/(best|last)\.ckpt", value) and "<" not in value:
            return value  # made by an earlier README command under that name (hydra.run.dir)
        if value in ("...", "CKPT", "DDPM_CKPT") or "<date>" in value:
            return f"{_producers(commands, index, kind)[0]}/checkpoints/best.ckpt"
        raise NotCovered(f"checkpoint {value!r}")

    for key, value in list(overrides.items()):
        if key in GPU_ONLY and value in ("gpu", "ddp", "cuda"):
            overrides[key] = GPU_ONLY[key]
        elif key in DROPPED:
            del overrides[key]
        elif key == "ckpt_path" and value.startswith("["):  # several checkpoints side by side
            names, runs = value.strip("[]").split(","), _producers(commands, index, kind)
            if len(runs) < len(names):
                raise NotCovered(f"needs {len(names)} earlier {kind} runs")
            overrides[key] = "[" + ",".join(f"{run}/checkpoints/best.ckpt" for run in runs[: len(names)]) + "]"
        elif key == "ckpt_path":
            overrides[key] = checkpoint(value)
        elif key == "resume" and value not in ("latest", "auto"):  # auto: a run in its own dir, started or continued
            overrides[key] = _producers(commands, index, "recon")[0]
        elif value.startswith("/data/"):  # the article's training_set, or its validation_set: a folder of its own
            overrides[key] = str(paths["art_validation" if "validation" in value else "art"])
        elif key.startswith("hydra.launcher") or (key == "hydra/launcher" and value == "slurm"):
            del overrides[key]  # no SLURM cluster here: the sweep runs with the local launcher
    if overrides.get("resume", "auto") != "auto":
        tiny = RESUME_TINY
    else:
        tiny = dict(TINY.get(script, {}))
        if script == "train":
            demo = overrides.get("experiment") == "demo" or overrides.get("data") == "demo"
            tiny |= TINY["demo"] if demo else {}
            tiny |= TINY["ddpm"] if overrides.get("model") == "ddpm" else {}
            if "data.root" not in overrides:  # the README's own folder when it names one (substituted above)
                tiny["data.root"] = str(paths["demo" if demo else "art"])
            if "hparams_search" not in overrides:
                tiny.pop("hydra.sweeper.n_trials")
            tiny.setdefault("hydra.sweep.dir" if "-m" in flags or "hparams_search" in overrides else
                            "hydra.run.dir", _run_dir(commands, index))
            if "hydra.run.dir" in overrides or "hydra.sweep.dir" in overrides:
                tiny.pop("hydra.run.dir", None), tiny.pop("hydra.sweep.dir", None)
    for key in tiny:
        overrides.pop(key, None), overrides.pop(key.lstrip("+"), None)
    args = flags + [f"{k}={v}" for k, v in {**overrides, **tiny}.items()]
    left = [a for a in args if re.search(r"<\w+>|\.\.\.|=/data/|=[A-Z_]{3,}$", a)]
    if left:
        raise NotCovered(f"placeholders left: {left}")
    return {"script": str(REPO / "scripts" / f"{script}.py"), "args": args, "env": env}


def _image_folder(root: Path, classes: tuple[str, ...], per_class: int) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(jpeg_bytes(pattern(48, 40, seed=10 * c + i)))
    return root


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Every README command, then the user mistakes, run once in a scratch dir laid out like a user's."""
    from art_diffusion.data.demo import write_demo_dataset

    base = tmp_path_factory.mktemp("readme")
    work = base / "work"
    paths = {"art": _image_folder(base / "art", KAGGLE_CLASSES, 4),
             "art_validation": _image_folder(base / "art_validation", KAGGLE_CLASSES, 1),
             "demo": write_demo_dataset(base / "demo", images_per_class=4, image_size=48, seed=42)}
    _image_folder(base / "shared" / "data" / "art-dev", KAGGLE_CLASSES[:2], 5)  # ../shared/data/art-dev: 2 test images
    _image_folder(work / "my_art", ("",), 2)
    Image.new("RGB", (40, 48), "white").save(work / "README.md.jpg")  # a file given as data.root below
    commands = readme_commands()
    entries, not_covered = [], []
    for index in range(len(commands)):
        try:
            entries.append(adapt(commands, index, paths))
        except NotCovered as reason:
            not_covered.append(f"{commands[index]}\n    -> {reason}")
    entries += _mistakes(commands)
    (base / "commands.json").write_text(json.dumps(entries, indent=1))
    scratch = base / "scratch"  # the temporary files of libraries (TMPDIR, matplotlib's config)
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "ART_DIFFUSION_CACHE": str(base / "cache"),
           "TMPDIR": str(scratch), "MPLCONFIGDIR": str(scratch / "matplotlib"),
           "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"), LOG_ENV: str(base / "writes.jsonl")}
    env.pop("ART_DIFFUSION_RUN_DIR", None)
    subprocess.run([sys.executable, str(REPO / "tests" / "helpers" / "readme_runner.py"), str(base / "commands.json"),
                    str(base / "results.json")], cwd=work, env=env, timeout=900, check=False)
    results = json.loads((base / "results.json").read_text())
    writes = write_audit.read_sections(base / "writes.jsonl")
    roots = [work / "outputs", work / "data", base / "cache", scratch]
    return commands, not_covered, entries, results, (writes, roots, work)


def _mistakes(commands: list[str]) -> list[dict]:
    """User errors that must read as one message: (script, args, what the message says)."""
    ddpm = f"{_producers(commands, len(commands), 'ddpm')[0]}/checkpoints/best.ckpt"
    recon = f"{_producers(commands, len(commands), 'recon')[0]}/checkpoints/best.ckpt"
    cases = [
        ("reconstruct", [f"ckpt_path={ddpm}", "input=my_art", "device=cpu"], "generates images from noise"),
        ("reconstruct", ["ckpt_path=outputs/nothing/best.ckpt", "input=my_art"], "Checkpoint not found"),
        ("reconstruct", [f"ckpt_path={recon}", "input=no_such_folder"], "input=no_such_folder: no such file"),
        ("generate", [f"ckpt_path={recon}", "device=cpu"], "reconstructs images"),
        ("export", [f"ckpt_path={ddpm}", "output_dir=exported/nothing", "format=onnx"], "the reconstructor only"),
        ("train", ["experiment=demo", "loss.perceptual_weight=abc"], "loss.perceptual_weight='abc' must be"),
        ("train", ["data.root=README.md.jpg"], "is a file, not a folder"),
        ("train", ["resume=outputs/nothing"], "resume=outputs/nothing"),
    ]
    return [{"script": str(REPO / "scripts" / f"{s}.py"), "args": args, "mistake": message}
            for s, args, message in cases]


def test_every_readme_command_is_covered(readme_run):
    commands, not_covered, _, _, _ = readme_run
    assert len(commands) >= 30  # the extraction found the README's commands
    assert not_covered == [], "README commands this test cannot run yet:\n" + "\n".join(not_covered)


def test_every_readme_command_works(readme_run):
    _, _, entries, results, _ = readme_run
    failed = [f"{Path(e['script']).name} {' '.join(e['args'])}\n  exit {r['returncode']}: {r['stderr'][-1500:]}"
              for e, r in zip(entries, results) if "mistake" not in e and r["returncode"] != 0]
    assert len(results) == len(entries), "the runner stopped early"
    assert failed == [], "\n\n".join(failed)


def test_every_readme_command_writes_only_under_its_roots(readme_run):
    """The write audit: whatever a command of the docs opens for writing, creates, renames or removes lies under its
    run dirs (outputs/), its output_dir, the demo data dir, the cache dir or the temporary dir; never in the data
    folders it reads, the source tree, or anywhere else."""
    _, _, entries, results, (writes, roots, work) = readme_run
    assert sum(len(events) for events in writes.values()) > 100  # the audit saw the commands write
    escaped = {}
    for index, entry in enumerate(entries):
        named = [work / value for arg in entry["args"] for key, _, value in [arg.partition("=")]
                 if key in ("output_dir", "output_json")]
        bad = write_audit.outside(writes.get(str(index), []), [*roots, *named], cwd=work)
        if bad:
            escaped[f"{Path(entry['script']).name} {' '.join(entry['args'])}"] = bad[:5]
    assert escaped == {}, "\n".join(f"{command}\n    {bad}" for command, bad in escaped.items())


def test_user_mistakes_end_in_one_message_and_exit_2(readme_run):
    _, _, entries, results, _ = readme_run
    for entry, result in zip(entries, results):
        if "mistake" not in entry:
            continue
        assert result["returncode"] == 2, (entry["args"], result["stderr"][-2000:])
        errors = [line for line in result["stderr"].splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in result["stderr"], result["stderr"][-2000:]
        assert entry["mistake"] in result["stderr"], result["stderr"][-2000:]
