"""What every script under scripts/ does before ``@hydra.main`` composes its config: the resolvers are registered
(by importing them) and an override whose plugin is missing is refused in one line."""

from __future__ import annotations

import contextlib
import difflib
import errno
import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from art_diffusion import UserError
from art_diffusion.run import resolvers  # noqa: F401  (registers the config resolvers before Hydra composes)
from art_diffusion.storage import DiskFullError, disk_full_error, ensure_room, is_disk_full, quiet_full_disk_reports

T = TypeVar("T")

#: Command-line choices that need an optional extra: (override, module the extra installs, extra that brings it).
OPTIONAL_PLUGINS = (
    ("hparams_search=optuna", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hydra/sweeper=optuna", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("logger=wandb", "wandb", "wandb"),
    ("logger=mlflow", "mlflow", "mlflow"),
    ("model/net=diffusers_unet", "diffusers", "diffusers"),
    ("format=onnx", "onnxscript", "onnx"),   # scripts/export.py: torch.onnx's exporter needs onnx and onnxscript
)
#: Extras whose message also offers ``.[dev]``; the loggers' and diffusers' messages name their own extra alone.
DEV_EXTRAS = ("optuna",)


def missing_extra(argv: list[str]) -> str | None:
    """The one-line message for an override whose Hydra plugin is not installed, else None."""
    for override, module, extra in OPTIONAL_PLUGINS:
        if override in argv and importlib.util.find_spec(module) is None:
            also = ' (or ".[dev]")' if extra in DEV_EXTRAS else ""
            return (f"{override} needs the optional '{extra}' extra, which is not installed: "
                    f"pip install -e \".[{extra}]\"{also}.")
    return None


def unquoted_equals(argv: list[str]) -> str | None:
    """The one-line fix for an override whose value holds an unquoted ``=``, which Hydra's grammar rejects with
    "mismatched input '='" (paths of sweep jobs, e.g. ``.../perceptual_weight=0.5/checkpoints/best.ckpt``)."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and "=" in value and not any(c in value for c in "'\"("):
            return (f"{arg}: Hydra needs a value holding '=' or ',' in quotes. Quote it for the shell and for Hydra: "
                    f"'{key}=\"path/a=1/file\"', or for a list '{key}=[\"path/a=1/file\",\"path/b=2/file\"]'.")
    return None


#: Characters that make an unquoted non-ASCII value more than one plain string (a list, a sweep, a quote, a
#: resolver): such a value is not quoted for the user, who is told how to quote it.
_NOT_PLAIN = set("'\"[]{}(),=$\\") | set(" \t")


def quote_non_ascii(argv: list[str]) -> tuple[list[str], str | None]:
    """Hydra's lexer reads unquoted values as ASCII only (``class_name=живопис`` fails with a lexer error). A plain
    value (one string: no quotes, brackets, commas, ``$`` or spaces) is quoted for Hydra, so it means what was
    typed; any other non-ASCII unquoted value gets the one-line fix (quote it), returned as the second item."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-") or value.isascii() or value[:1] in "'\"":
            out.append(arg)
        elif not _NOT_PLAIN & set(value) and key.isascii():
            out.append(f'{key}="{value}"')
        else:
            return out, (f"{arg}: Hydra reads unquoted values as ASCII only. Quote every non-ASCII string for the "
                         f"shell and for Hydra: '{key}=\"...\"' for one string, '{key}=[\"...\",\"...\"]' for a "
                         "list.")
    return out, None


#: Hydra flags that read a file we cannot check: ``--experimental-rerun`` unpickles ``.hydra/config.pickle``.
REFUSED_FLAGS = {"--experimental-rerun": "it unpickles the run's .hydra/config.pickle, and opening a pickle can run "
                                         "code. Rerun with the overrides in .hydra/overrides.yaml, or resume=RUN_DIR."}


def refused_flag(argv: list[str]) -> str | None:
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in REFUSED_FLAGS:
            return f"{flag} is not supported: {REFUSED_FLAGS[flag]}"
    return None


#: Command-line names that changed (an option, a key prefix) -> what to write now.
RENAMED = {
    "model=conv_diffusion": "model=reconstructor (its network is model/net=conv_diffusion)",
    "optim=adam_steplr": "optim=adam scheduler=steplr",
    "optim.step_size": "scheduler.step_size",
    "optim.gamma": "scheduler.gamma",
}


def renamed(argv: list[str]) -> str | None:
    """The one-line fix for an override that uses a name the configs no longer have (:data:`RENAMED`)."""
    for arg in argv:
        for old, new in RENAMED.items():
            key = arg.lstrip("+~")
            if key == old or ("=" not in old and key.startswith(old + "=")):
                return f"{arg}: {old} was renamed; use {new}."
    return None


def prepare_cli(argv: list[str] | None = None) -> list[str]:
    """Stop with one line, before Hydra composes, when an override needs an optional extra that is missing, holds
    an unquoted ``=``, uses a renamed option or key, or a flag would load a file unchecked. A plain non-ASCII value
    (``class_name=живопис``) is quoted for Hydra (in ``sys.argv`` when ``argv`` is None); returns the overrides."""
    given = sys.argv[1:] if argv is None else argv
    quoted, message = quote_non_ascii(given)
    message = (refused_flag(given) or missing_extra(given) or renamed(given) or message
               or unquoted_equals(quoted))
    if message:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)
    if argv is None:
        sys.argv[1:] = quoted
        _report_composition_errors()
    return quoted


def composition_error(error: BaseException) -> str | None:
    """The one-line message for Hydra failing to compose the command line's config: a key the config does not have
    (``data.bacth_size=8``: the closest key that exists, or ``+KEY=VALUE`` to add one), an option a group does not
    have (``model=foo``: the closest option and all of them), an override it cannot parse. None for anything else."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    cause = error.__cause__
    if isinstance(error, MissingConfigException) and error.options and "/" in (error.missing_cfg_file or ""):
        group, name = error.missing_cfg_file.rsplit("/", 1)
        close = difflib.get_close_matches(name, error.options, n=1)
        fix = f"did you mean {group}={close[0]}? (Its options: " if close else "use one of its options ("
        return f"{group}={name}: the config group {group} has no option {name!r}; {fix}{', '.join(error.options)}.)"
    if isinstance(error, ConfigCompositionException) and isinstance(getattr(cause, "parent_node", None), DictConfig) \
            and getattr(cause, "full_key", None) and getattr(cause, "key", None) is not None:
        key, full_key = str(cause.key), str(cause.full_key)
        prefix = full_key[:len(full_key) - len(key)]
        keys = [str(k) for k in cause.parent_node.keys() if k != "hydra"]
        close = difflib.get_close_matches(key, keys, n=1)
        fix = (f"did you mean {prefix}{close[0]}?" if close else
               f"the keys{' under ' + prefix.rstrip('.') if prefix else ''} are {', '.join(keys)}.")
        return f"{full_key}: the config has no such key; {fix} (To add a key it does not have: +{full_key}=VALUE.)"
    if isinstance(error, OverrideParseException):
        return (f"cannot read the override {error.override!r}: {str(error).splitlines()[0]}. See "
                "https://hydra.cc/docs/advanced/override_grammar/basic for how to write one.")
    if isinstance(error, ConfigCompositionException) and cause is None:
        return " ".join(str(error).split())
    return None


def _report_composition_errors() -> None:
    """Hydra prints a config it cannot compose in several lines and exits with status 1: its ``run_and_report``
    (which ``@hydra.main`` calls) is wrapped so that such an error is one ``error:`` line and exit status 2 (see
    :func:`composition_error`). Anything else is Hydra's to report, as before."""
    from hydra._internal import utils as hydra_utils

    report = hydra_utils.run_and_report
    if getattr(report, "composition_errors", False):
        return

    def run_and_report(func):
        def composed():
            try:
                return func()
            except Exception as error:
                message = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else composition_error(error)
                if message is None:
                    raise
                print(f"error: {message}", file=sys.stderr)
                raise SystemExit(2) from None
        return report(composed)

    run_and_report.composition_errors = True
    hydra_utils.run_and_report = run_and_report


class WritableRunDir(Callback):
    """Hydra callback (``hydra.callbacks`` of every entry config): makes the run dir (the sweep dir of a multirun)
    before Hydra does, so a place that cannot hold it (a read-only file system, a full disk, a file in the way) is
    one ``error:`` line with the fix and exit status 2, not Hydra's traceback from its own ``mkdir``."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        make_run_dir(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        make_run_dir(config, "hydra.sweep.dir")


def make_run_dir(config: DictConfig, key: str) -> None:
    try:
        value = str(config.hydra.run.dir if key == "hydra.run.dir" else config.hydra.sweep.dir)
    except Exception:  # an interpolation that fails: Hydra reports it, with its own message, right after
        return
    tool = Path(sys.argv[0]).name
    fix = ("output_dir=DIR" if tool != "train.py" else f"{key}=DIR") + " on a writable disk"
    if not value.strip():  # "" would be the working directory, silently filled with the outputs
        print(f"error: the output directory is empty ({'output_dir' if tool != 'train.py' else key}=''): pass "
              f"{fix}.", file=sys.stderr)
        raise SystemExit(2)
    path = Path(value)
    existed = path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):  # an existing dir on a read-only mount (EROFS even for root)
            raise OSError(errno.EROFS, "not writable")
        _room_for_hydras_record(path)
    except DiskFullError as exc:
        if not existed:
            with contextlib.suppress(OSError):
                path.rmdir()
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"error: cannot create the output directory {path} ({exc.strerror or exc}): pass {fix}, or run "
              "from a writable working directory.", file=sys.stderr)
        raise SystemExit(2) from None


_HYDRA_RECORD_ROOM = 1 << 20  # bytes: Hydra's record of the call (.hydra/*.yaml) and the first log lines


def _room_for_hydras_record(path: Path) -> None:
    """A disk already full: one :class:`DiskFullError` now, not a traceback from Hydra's own write of ``.hydra``
    (outside the task, so outside :func:`user_errors`). The space is taken and given back at once."""
    ensure_room(path, _HYDRA_RECORD_ROOM, "the run's first records (Hydra's .hydra/*.yaml, train.log)")


#: What Hydra writes into a run dir before the task starts (``hydra.output_subdir``, here ``.hydra``)
_HYDRA_RECORD = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def _written_before_the_task(entry: Path) -> bool:
    """An empty log or lock file (the run dir's, run.run_dir_owner), or the ``.hydra`` dir holding only the three
    files Hydra wrote for this call."""
    if entry.is_file():
        return entry.suffix in (".log", ".lock") and entry.stat().st_size == 0
    return (entry.name == ".hydra" and entry.is_dir()
            and all(f.is_file() and f.name in _HYDRA_RECORD for f in entry.iterdir()))


def discard_empty_output_dir() -> None:
    """Remove the output dir Hydra made for this call if it holds nothing but empty logs and Hydra's own record of
    the call (the call failed before writing anything), and the parents under the working directory that this
    leaves empty. A dir holding anything else (another run's files, a resumed run's ``.hydra/resume-*``, the user's
    files in a tool's ``output_dir``) is left alone, but for this call's own log while it is still empty."""
    if not HydraConfig.initialized():
        return
    from art_diffusion.run.run_dir_owner import release_all

    release_all()  # the run dir this call took when Hydra's run started: its lock record goes, its lock file stays
    out, cwd = Path(HydraConfig.get().runtime.output_dir).resolve(), Path.cwd().resolve()
    entries = list(out.iterdir()) if out.is_dir() else []
    if not out.is_dir() or not all(_written_before_the_task(entry) for entry in entries):
        own_log = out / f"{HydraConfig.get().job.name}.log"  # a folder that was there before: its files stay
        if own_log.is_file() and own_log.stat().st_size == 0:
            own_log.unlink()
        return
    for entry in entries:
        if entry.is_dir():
            for file in entry.iterdir():
                file.unlink()
            entry.rmdir()
        else:
            entry.unlink()
    out.rmdir()
    while cwd in out.parent.parents and not any(out.parent.iterdir()):
        out = out.parent
        out.rmdir()


def user_error_in(error: BaseException) -> UserError | None:
    """``error`` itself if it is a :class:`UserError`, else the first one it was raised from: Hydra's instantiate
    wraps a constructor's error in an ``InstantiationException``, a DataLoader worker's in another exception."""
    found = next((e for e in _chain(error) if isinstance(e, UserError)), None)
    if found is None and error is not None and is_disk_full(error):
        return _disk_full_elsewhere(error)
    return found


def _disk_full_elsewhere(error: BaseException) -> UserError:
    """A full disk met by a library's own writer (TensorBoard's event file, a logger's CSV): not a bug, one message
    naming the file's directory if the error says it, else the run dir (where the loggers write)."""
    filename = next((e.filename for e in _chain(error) if isinstance(e, OSError) and e.filename), None)
    if filename:
        return disk_full_error(Path(os.fsdecode(filename)), error)
    directory = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    return disk_full_error(directory, error, what="a logger's file in that run dir")


def _chain(error: BaseException | None):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def user_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Decorate a script's task function (under ``@hydra.main``): a ``UserError`` (also one wrapped by Hydra or
    Lightning) ends the process with its message alone on stderr and exit status 2, instead of a traceback; any
    other exception is a bug and keeps it. Either way, a call that failed before writing anything leaves no empty
    output dir behind."""

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        quiet_full_disk_reports()  # a logger's thread, train.log on a full disk: no traceback on stderr
        try:
            return task(*args, **kwargs)
        except BaseException as error:
            discard_empty_output_dir()
            user_error = user_error_in(error) if isinstance(error, Exception) else None
            if user_error is None:
                raise
            logging.getLogger(task.__module__).debug("User error", exc_info=True)  # the traceback, in the log file
            print(f"error: {user_error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
