"""What every script under scripts/ does before ``@hydra.main`` composes its config: the resolvers are registered
(by importing them) and an override whose plugin is missing is refused in one line."""

from __future__ import annotations

import importlib.util
import sys

from art_diffusion.run import resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)

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
