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


def prepare_cli(argv: list[str] | None = None) -> None:
    """Stop with one line, before Hydra composes, when an override needs an optional extra that is missing."""
    message = missing_extra(sys.argv[1:] if argv is None else argv)
    if message:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def user_error_in(error: BaseException) -> UserError | None:
    """``error`` itself if it is a :class:`UserError`, else the first one it was raised from: Hydra's instantiate
    wraps a constructor's error in an ``InstantiationException``, a DataLoader worker's in another exception."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def user_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Decorate a script's task function (under ``@hydra.main``): a ``UserError`` (also one wrapped by Hydra or
    Lightning) ends the process with its message alone on stderr and exit status 2, instead of a traceback; any
    other exception is a bug and keeps it."""

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except Exception as error:
            user_error = user_error_in(error)
            if user_error is None:
                raise
            logging.getLogger(task.__module__).debug("User error", exc_info=True)  # the traceback, in the log file
            print(f"error: {user_error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
