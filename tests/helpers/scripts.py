"""Run the scripts as a user would, with the tiny offline settings of the tests: in a subprocess
(:func:`train_script`), or, where the process itself is not what a test checks, in this one (:func:`run_script`).

``run_script`` runs ``python scripts/X.py ARGS`` the way the interpreter would (``runpy`` with ``__name__ ==
"__main__"``, the script's argv, working directory and environment) and returns its exit status and output like
``subprocess.run``: the same code from the command line on, without paying Python's, torch's and Lightning's
start-up (5-10 s on a 2-core machine) once per command. What it cannot show: a signal, a kill, another process
holding a lock, C code writing to file descriptor 2, a second rank; tests of those start processes.
"""

import contextlib
import io
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

from art_diffusion.run.cluster.ddp import RUN_DIR_ENV
from tests.helpers.config import REPO, TINY

# One epoch of two batches, one validation and one test batch: enough for every metric to exist.
SHORT = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1"]


def script_env() -> dict[str, str]:
    """The environment of a script run by a test: this checkout's package (and tests.* for test callbacks)."""
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    env["PYTHONPATH"] = f"{REPO / 'src'}:{REPO}"
    return env


def train_script(*args: str, cwd: Path = REPO, timeout: int = 400, wait: bool = True
                 ) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run scripts/train.py in a subprocess, importing this checkout's package (and tests.* for test callbacks); with
    ``wait=False``, the running process (its stdout and stderr together), for a test that signals or kills it."""
    command = [sys.executable, str(REPO / "scripts" / "train.py"), *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(command, cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=timeout)


def tiny(demo_root: Path) -> list[str]:
    return [o for o in TINY if not o.startswith("trainer.max_epochs")] + [f"data.root={demo_root}"]


def run_script(name: str, *args: str, cwd: Path | str = REPO, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """``python scripts/<name>.py ARGS`` run in this process from ``cwd`` with ``env`` added to the environment;
    what it printed and its exit status (1 and the traceback for an exception that escapes, as Python would). What
    the run changes in the process (environment, working directory, logging handlers, torch's threads and
    determinism, signal handlers) is put back, and what it registered to run at exit runs when it returns, so the
    next test starts as it would have."""
    script = str(REPO / "scripts" / f"{name}.py")
    out, err, code = io.StringIO(), io.StringIO(), 0
    with _process_state_restored():
        os.environ.pop(RUN_DIR_ENV, None)
        os.environ.update(env or {})
        sys.argv = [script, *args]
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _library_consoles_on(err):
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except BaseException:  # what the interpreter prints before it exits 1
                traceback.print_exc()
                code = 1
    return subprocess.CompletedProcess([sys.executable, script, *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _process_state_restored():
    import atexit
    import logging
    import signal

    import torch
    from hydra.core.global_hydra import GlobalHydra

    from art_diffusion.checkpoints import resume

    root = logging.getLogger()
    environ, argv, cwd = dict(os.environ), sys.argv, os.getcwd()
    handlers, level = list(root.handlers), root.level
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    stops = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    resume._remove_unused_claims()  # a new process has claimed no run dir: what this one claimed before ends here
    GlobalHydra.instance().clear()  # nor composed a config: each command composes from scratch
    at_exit, register = [], atexit.register
    atexit.register = lambda fn, *a, **k: at_exit.append((fn, a, k)) or fn  # the script's exit is this call's end
    try:
        yield
    finally:
        atexit.register = register
        for fn, a, k in reversed(at_exit):
            fn(*a, **k)
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()  # the run's train.log, its console on a buffer that is gone
        root.handlers[:], root.level = handlers, level
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        for sig, handler in stops.items():
            signal.signal(sig, handler)
        os.chdir(cwd)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
        GlobalHydra.instance().clear()


@contextlib.contextmanager
def _library_consoles_on(stream):
    """Lightning's console handlers hold the stderr of their import: for the run, they write to ``stream``, as they
    would to the process's stderr."""
    import logging

    consoles = [handler for logger in logging.Logger.manager.loggerDict.values()
                if isinstance(logger, logging.Logger) for handler in logger.handlers
                if type(handler) is logging.StreamHandler]
    before = [handler.setStream(stream) for handler in consoles]
    try:
        yield
    finally:
        for handler, old in zip(consoles, before):
            handler.setStream(old)
