"""A write audit: every file a process opens for writing, creates, renames, removes or changes, recorded through
``sys.addaudithook`` (PEP 578), so a test can check that a command writes only under the roots it declares.

In-process: :func:`install`. For a script in a subprocess: put :data:`SITE_DIR` first on ``PYTHONPATH`` and set
:data:`LOG_ENV` to a file; ``sitecustomize`` installs the hook at start-up (DataLoader workers forked from it keep
it). Each event is one JSON line ``[event, absolute path]``, appended with ``os.write`` on a descriptor opened once,
so the hook never audits itself. Writes made by C code (torch's own file writer, SQLite) are not seen; the project
writes its files through Python (``storage.atomic_path``), which is.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

LOG_ENV = "ART_DIFFUSION_WRITE_AUDIT"
SITE_DIR = Path(__file__).parent / "audit_site"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
#: event -> the positions of its path arguments, and of its dir_fd argument (a path relative to an open directory:
#: shutil.rmtree removes a tree that way, and its own event has the tree's path)
_PATHS = {"os.rename": ((0, 1), 2), "os.remove": ((0,), 1), "os.mkdir": ((0,), 2), "os.rmdir": ((0,), 1),
          "shutil.rmtree": ((0,), None), "os.symlink": ((1,), 2), "os.link": ((1,), 2), "os.truncate": ((0,), None),
          "os.chmod": ((0,), 2), "os.chown": ((0,), 3), "os.utime": ((0,), None), "os.mkfifo": ((0,), 2),
          "os.mknod": ((0,), 3)}
_installed: list[int] = []


def _path(value) -> str | None:
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.path.abspath(os.fsdecode(value))
    return None


def install(log_path: str | os.PathLike) -> None:
    """Record this process's writes in ``log_path`` (appended), from now on."""
    if _installed:
        return
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    _installed.append(fd)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else (
                isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
            paths = [_path(path)] if writing else []
        elif event in _PATHS:
            positions, dir_fd = _PATHS[event]
            if dir_fd is not None and dir_fd < len(args) and args[dir_fd] not in (None, -100):
                return  # relative to a directory descriptor: inside a tree whose own event was recorded
            paths = [_path(args[i]) for i in positions if i < len(args)]
        else:
            return
        for path in filter(None, paths):
            os.write(fd, (json.dumps([event, path]) + "\n").encode())

    sys.addaudithook(hook)


def mark(label: str) -> None:
    """A boundary in the log (one process running several commands): :func:`read_sections` splits there."""
    if _installed:
        os.write(_installed[0], (json.dumps(["mark", label]) + "\n").encode())


def read(log_path: str | os.PathLike) -> list[tuple[str, str]]:
    """The (event, path) pairs recorded in ``log_path``."""
    text = Path(log_path).read_text() if Path(log_path).exists() else ""
    return [tuple(json.loads(line)) for line in text.splitlines() if line]


def read_sections(log_path: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """The events of ``log_path`` by the :func:`mark` before them."""
    sections: dict[str, list[tuple[str, str]]] = {"": []}
    label = ""
    for event, path in read(log_path):
        if event == "mark":
            label = path
            sections.setdefault(label, [])
        else:
            sections[label].append((event, path))
    return sections


def outside(events: list[tuple[str, str]], roots: list[str | os.PathLike],
            cwd: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The events whose path is under none of ``roots`` (``/dev/null`` and the like are allowed; so is making the
    working directory ``cwd``, which exists: Hydra's ``run.dir: .``)."""
    allowed = [os.path.realpath(root) for root in roots] + ["/dev", "/proc"]
    events = [e for e in events if not (cwd and e[0] == "os.mkdir" and os.path.realpath(e[1]) == os.path.realpath(cwd))]

    def under(path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == root or real.startswith(root.rstrip("/") + "/") for root in allowed)

    return sorted({event for event in events if not under(event[1])})


def audited_env(env: dict[str, str], log_path: str | os.PathLike) -> dict[str, str]:
    """``env`` for a subprocess whose writes go to ``log_path``."""
    return {**env, LOG_ENV: str(log_path), "PYTHONPATH": os.pathsep.join([str(SITE_DIR), env.get("PYTHONPATH", "")])}
