"""What every script under scripts/ does before ``@hydra.main`` composes its config: the resolvers are registered
(by importing them) and an override whose plugin is missing is refused in one line."""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from art_diffusion.errors import UserError
from art_diffusion.run import resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)

T = TypeVar("T")

#: Command-line choices that need an optional extra: (override, module the plugin installs, extra that brings it).
OPTIONAL_PLUGINS = (
    ("hparams_search=optuna", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hydra/sweeper=optuna", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
)


def missing_extra(argv: list[str]) -> str | None:
    """The one-line message for an override whose Hydra plugin is not installed, else None."""
    for override, module, extra in OPTIONAL_PLUGINS:
        if override in argv and importlib.util.find_spec(module) is None:
            return (f"{override} needs the optional '{extra}' extra, which is not installed: "
                    f"pip install -e \".[{extra}]\" (or \".[dev]\").")
    return None


#: Hydra flags that read a file we cannot check: ``--experimental-rerun`` unpickles ``.hydra/config.pickle``.
REFUSED_FLAGS = {"--experimental-rerun": "it unpickles the run's .hydra/config.pickle, and opening a pickle can run "
                                         "code. Rerun with the overrides in .hydra/overrides.yaml, or resume=RUN_DIR."}


def refused_flag(argv: list[str]) -> str | None:
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in REFUSED_FLAGS:
            return f"{flag} is not supported: {REFUSED_FLAGS[flag]}"
    return None


def prepare_cli(argv: list[str] | None = None) -> None:
    """Stop with one line, before Hydra composes, when an override needs an optional extra that is missing or a
    flag would load a file unchecked."""
    argv = sys.argv[1:] if argv is None else argv
    message = refused_flag(argv) or missing_extra(argv)
    if message:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def user_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Decorate a script's task function (under ``@hydra.main``): a ``UserError`` ends the process with its message
    alone on stderr and exit status 2, instead of Hydra's traceback; any other exception is a bug and keeps it."""

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except UserError as error:
            logging.getLogger(task.__module__).debug("User error", exc_info=True)  # the traceback, in the log file
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
