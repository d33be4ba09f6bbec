"""A tool's output folder: a command never replaces a file it did not write there, nor one of its own inputs.

``reconstruct.py``, ``generate.py``, ``evaluate.py`` and ``export.py`` write into a folder the user names
(``output_dir=``), which may hold files already: a project's README.md (export writes a model card of that name), a
training run's metrics.json (evaluate writes one), the very images being reconstructed (``input=recon/reconstructions
output_dir=recon``). Each tool opens its folder with :func:`output_folder` and names what it will write
(:meth:`OutputFolder.claim`) before any work, so a clash is one :class:`ForeignFileError` naming the file before
minutes of sampling, not a file lost after them. The folder's record (:data:`RECORD_FILE`, hidden) lists every file a
tool wrote there, so the same call again replaces its own earlier outputs and nothing else.

By construction, not by each tool's care: while a folder is open, every file the project writes goes through
:func:`~art_diffusion.storage.atomic_path`, which passes any path under an open folder through the same claim. A
write a tool did not name up front is checked (and recorded) when it happens.

Not covered, on purpose: the tool's own log (``<tool>.log``, appended by Hydra's logging) and a single file the user
names itself (``fd_vgg.py output_json=``), which is theirs to replace. A record that cannot be read counts as empty
(nothing in the folder is taken for the tools'), with one warning. Two calls writing one folder at the same moment
may lose one's record entries: a later call then refuses those files, never replaces a foreign one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from art_diffusion import ConfigError
from art_diffusion.storage import files

log = logging.getLogger(__name__)

RECORD_FILE = ".art-diffusion-outputs.json"  # {"files": [relative paths a tool wrote here]}; marks an output folder
MAX_RECORD_BYTES = 64 << 20  # a million names of generate.py's images is ~30 MB: a larger record is not read
_SHOWN = 3  # clashing files named in a message


class ForeignFileError(ConfigError):
    """A tool would replace a file in its output folder that no tool wrote there, or one of its inputs."""


class OutputFolder:
    """The folder ``root`` that a tool writes (``key`` names it to the user); ``inputs`` are the files the call
    reads, which it never writes over, whatever the record says."""

    def __init__(self, root: Path, key: str, inputs: Iterable[Path] = ()):
        self.root, self.key = Path(root), key
        self._resolved = self.root.resolve()
        self._inputs = {identity for identity in map(files.file_identity, inputs) if identity is not None}
        self._ours = self._read_record()
        self._claimed: set[str] = set()

    def _read_record(self) -> set[str]:
        path = self.root / RECORD_FILE
        try:
            names = files.read_json(path, MAX_RECORD_BYTES)["files"]
            if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
                raise ValueError("not a list of names")
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s cannot be read (%s): no file in %s is taken for a tool's output.", path, exc, self.root)
            return set()
        return set(names)

    def claim(self, *names: str | Path) -> None:
        """Take the paths ``names`` (relative to the folder) for this call, or refuse before anything is written:
        a file that exists under one of them and that no tool wrote here, or that is one of the inputs. The claims
        are recorded before the files are written, so a call killed half-way leaves its files recognised as its own.
        """
        relative = {_relative_name(name) for name in names} - self._claimed
        inputs, foreign = [], []
        for name in sorted(relative):
            path = self.root / name
            identity = files.file_identity(path)
            if identity is None:
                continue
            if identity in self._inputs:
                inputs.append(path)
            elif name not in self._ours:
                foreign.append(path)
        if inputs:
            raise ForeignFileError(
                f"{self.key}={self.root}: {_listed(inputs)} {'is an input' if len(inputs) == 1 else 'are inputs'} of "
                "this command, which its outputs would replace. Pass another output folder.")
        if foreign:
            raise ForeignFileError(
                f"{self.key}={self.root}: {_listed(foreign)} {'exists' if len(foreign) == 1 else 'exist'} and "
                f"{'is' if len(foreign) == 1 else 'are'} not an earlier output of this project's tools in this folder "
                f"({RECORD_FILE} does not list {'it' if len(foreign) == 1 else 'them'}), so this command would replace "
                f"{'it' if len(foreign) == 1 else 'them'}. Pass a new or empty folder, or move the file away.")
        self._claimed |= relative
        if relative - self._ours:
            self._ours |= relative
            self._write_record()

    def _write_record(self) -> None:
        names = self._ours | self._read_record()  # another call's entries since this one read the record
        files.atomic_write(self.root / RECORD_FILE, json.dumps({"files": sorted(names)}, indent=0))

    def check_write(self, path: Path) -> None:
        """:func:`~art_diffusion.storage.atomic_path`'s check: a path under this folder is claimed when written."""
        try:
            name = path.parent.resolve().joinpath(path.name).relative_to(self._resolved)
        except ValueError:
            return  # not under this folder
        if name.as_posix() != RECORD_FILE:
            self.claim(name)


def _relative_name(name: str | Path) -> str:
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{name}: an output name is relative to its folder")  # a bug: names are the tools' own
    return relative.as_posix()


def _listed(paths: list[Path]) -> str:
    shown = ", ".join(str(path) for path in paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


@contextlib.contextmanager
def output_folder(root: str | Path, key: str = "output_dir", inputs: Iterable[Path] = ()) -> Iterator[OutputFolder]:
    """``root`` as an :class:`OutputFolder` for a ``with`` block, made if missing; every atomic write under it in the
    block is claimed first."""
    folder = OutputFolder(Path(root), key, inputs)
    folder.root.mkdir(parents=True, exist_ok=True)
    files.WRITE_CHECKS.append(folder.check_write)
    try:
        yield folder
    finally:
        files.WRITE_CHECKS.remove(folder.check_write)

