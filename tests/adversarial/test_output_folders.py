"""A command's outputs never replace a file it did not write, nor one of its inputs, and never become inputs.

The class, not cases: every tool is run once into a new folder to learn every file it writes; then, for each of
those names, a foreign file of that name is planted in a new folder and the tool is run into it. It must refuse
before writing anything, in one ``error:`` line naming the file, and leave the file as it was. A new output a tool
gains is attacked without a new test. The mechanism (storage.outputs) is checked on its own below, then the listers'
side: a folder a command wrote is not read as data.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from art_diffusion.data.listing import list_image_folder, list_images
from art_diffusion.storage import ForeignFileError, atomic_write, output_folder
from art_diffusion.storage.outputs import MAX_RECORD_BYTES, RECORD_FILE
from tests.helpers.scripts import run_script

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(path: Path, color=(200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), color).save(path)
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


#: Each tool, with the arguments of a tiny call that writes into {out}
TOOLS = {
    "reconstruct": lambda run, ddpm, inputs: [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"input={inputs}",
                                              "device=cpu"],
    "generate": lambda run, ddpm, inputs: [f"ckpt_path={ddpm}", "num_images=2", "steps=2", "progress=false",
                                           "device=cpu"],
    "evaluate": lambda run, ddpm, inputs: [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "lpips.enabled=false",
                                           "device=cpu"],
    "export": lambda run, ddpm, inputs: [f"ckpt_path={run}"],
}


@pytest.mark.slow  # runs each tool end to end, once per name it writes (in-process: run_script)
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_no_tool_replaces_a_file_it_did_not_write(tool, tiny_run, ddpm_checkpoint, tmp_path):
    inputs = tmp_path / "inputs"
    _image(inputs / "a.png")
    args = TOOLS[tool](tiny_run, ddpm_checkpoint, inputs)
    first = run_script(tool, *args, f"output_dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    names = [name for name in _tree(tmp_path / "first") if name != RECORD_FILE and not name.endswith(".log")]
    assert len(names) >= 1, names
    recorded = json.loads((tmp_path / "first" / RECORD_FILE).read_text())["files"]
    assert set(names) <= set(recorded), (names, recorded)  # what the next call may replace

    again = run_script(tool, *args, f"output_dir={tmp_path / 'first'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]  # its own earlier outputs: replaced

    for i, name in enumerate(names):
        out = tmp_path / f"planted{i}"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"the user's own file")
        before = _tree(out)
        done = run_script(tool, *args, f"output_dir={out}", cwd=tmp_path)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, (name, done.stderr[-2000:])
        assert str(out / name) in errors[0] and "output_dir=" in errors[0], errors
        assert _tree(out) == before, name  # refused before anything was written (its empty log removed too)


@pytest.mark.slow  # runs the script end to end (in-process: run_script)
def test_reconstructing_a_folder_of_reconstructions_in_place_is_refused(tiny_run, tmp_path):
    """input=recon/reconstructions output_dir=recon: the outputs' names are the inputs' own files."""
    folder = tmp_path / "recon" / "reconstructions"
    for i in range(2):
        _image(folder / f"x{i}.png", (40 * i, 90, 200))
    before = _tree(folder)
    done = run_script("reconstruct", f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}", f"input={folder}",
                      f"output_dir={tmp_path / 'recon'}", "device=cpu", cwd=tmp_path)
    assert done.returncode == 2 and "are inputs of this command" in done.stderr, done.stderr[-2000:]
    assert _tree(folder) == before
    assert sorted(p.name for p in (tmp_path / "recon").iterdir()) == ["reconstructions"]  # no log left either


# The mechanism on its own: storage.outputs


def test_a_foreign_file_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "README.md").write_text("mine")
    with output_folder(tmp_path) as folder, pytest.raises(ForeignFileError, match="README.md"):
        folder.claim("model.safetensors", "README.md")
    assert (tmp_path / "README.md").read_text() == "mine"
    assert not (tmp_path / RECORD_FILE).exists()  # nothing claimed when one name is refused


def test_a_write_the_tool_did_not_claim_is_checked_when_it_happens(tmp_path):
    """By construction: every atomic write under an open folder passes the claim, named up front or not."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with output_folder(out):
        atomic_write(out / "new.txt", "ours")  # a new name: recorded as the folder's
        with pytest.raises(ForeignFileError, match="notes.txt"):
            atomic_write(out / "notes.txt", "replaced")
        atomic_write(tmp_path / "beside.txt", "not under the folder: not its business")
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / RECORD_FILE).read_text())["files"] == ["new.txt"]
    atomic_write(out / "notes.txt", "no folder open: this write is not a tool's output")
    with output_folder(out) as folder:
        folder.claim("new.txt")  # a later call replaces what an earlier one wrote


@pytest.mark.parametrize("link", ["symlinked folder", "hard link", "symlink"])
def test_an_input_is_never_an_output_whatever_the_path_to_it(tmp_path, link):
    source = _image(tmp_path / "photos" / "a.png")
    out = tmp_path / "out"
    if link == "symlinked folder":  # out/reconstructions is the photos folder itself
        out.mkdir()
        (out / "reconstructions").symlink_to(source.parent, target_is_directory=True)
    else:
        (out / "reconstructions").mkdir(parents=True)
        (os.link if link == "hard link" else os.symlink)(source, out / "reconstructions" / "a.png")
    (out / RECORD_FILE).write_text(json.dumps({"files": ["reconstructions/a.png"]}))  # even if recorded as output
    with output_folder(out, inputs=[source]) as folder, pytest.raises(ForeignFileError, match="is an input of"):
        folder.claim("reconstructions/a.png")
    assert source.read_bytes() == (tmp_path / "photos" / "a.png").read_bytes() and Image.open(source).size == (40, 40)


@pytest.mark.parametrize("record", ['{"files": "README.md"}', "not json", '{"files": [1]}', "[]", "", b"\xff\xfe",
                                    "[" * 100_000, "oversize"])
def test_a_record_that_cannot_be_read_claims_nothing(tmp_path, record, caplog):
    (tmp_path / "README.md").write_text("mine")
    if record == "oversize":  # a sparse file larger than any record: never read into memory
        with open(tmp_path / RECORD_FILE, "wb") as fh:
            fh.truncate(MAX_RECORD_BYTES + 1)
    else:
        (tmp_path / RECORD_FILE).write_bytes(record if isinstance(record, bytes) else record.encode())
    with caplog.at_level(logging.WARNING), output_folder(tmp_path) as folder:
        with pytest.raises(ForeignFileError):
            folder.claim("README.md")
    assert (tmp_path / "README.md").read_text() == "mine"
    assert RECORD_FILE in caplog.text


def test_claims_are_recorded_before_the_files_are_written(tmp_path):
    """A call killed half-way: its next run recognises what it had written as its own."""
    with output_folder(tmp_path) as folder:
        folder.claim("images/00000.png", "images/00001.png", "grid.png")
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / "00000.png").write_bytes(b"half a run")  # then the process dies
    with output_folder(tmp_path) as folder:
        folder.claim("images/00000.png", "images/00001.png", "grid.png")


# The listers: what a command wrote is not data


def test_run_dirs_and_tool_outputs_under_a_data_folder_are_not_listed(tmp_path, caplog):
    root = tmp_path / "art"
    _image(root / "painting" / "p.jpg")
    _image(root / "painting" / "outputs" / "2026-12-06" / "10-00-00" / "reconstructions" / "epoch_000.png")
    (root / "painting" / "outputs" / "2026-12-06" / "10-00-00" / "owner.lock").touch()  # a training run's dir
    _image(root / "sculpture" / "s.jpg")
    with output_folder(root / "sculpture" / "recon") as folder:  # a tool's output_dir
        folder.claim("reconstructions/s.png")
    _image(root / "sculpture" / "recon" / "reconstructions" / "s.png")
    listing = list_image_folder(root)
    assert [Path(f.path).name for f in listing.files] == ["p.jpg", "s.jpg"]
    assert len(listing.outputs) == 2
    with caplog.at_level(logging.WARNING):
        inputs = list_images(root)
    assert [p.name for p in inputs] == ["p.jpg", "s.jpg"] and "Not reading" in caplog.text
    assert [p.name for p in list_images(root / "sculpture" / "recon")] == ["s.png"]  # named itself: read


@pytest.mark.slow  # runs the script twice (in-process: run_script)
def test_reconstructions_written_inside_the_input_folder_are_not_inputs_next_time(tiny_run, tmp_path):
    art = tmp_path / "art"
    _image(art / "a.png")
    args = [f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}", f"input={art}", f"output_dir={art / 'recon'}",
            "device=cpu"]
    for _ in range(2):
        done = run_script("reconstruct", *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    rows = (art / "recon" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith(str(art / "a.png")), rows  # header, a.png, mean
    assert not (art / "recon" / "reconstructions" / "recon").exists()
    shutil.rmtree(art / "recon")
