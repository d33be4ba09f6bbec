"""Resume a run in place: ``python scripts/train.py resume=RUN_DIR`` (or ``resume=latest``, or ``resume=auto``).

The run continues in its own directory (Hydra's run dir is pointed there, see ``conf/hydra/default.yaml``) from
``checkpoints/last.ckpt``, with the config stored in that checkpoint: the settings it was trained with, not the
defaults of today's config files. Only the keys in :data:`RESUME_OVERRIDABLE` may change on the command line.
``resume=auto`` (for jobs a cluster may stop and start again) continues the run dir Hydra gives this run, if it has
a last.ckpt, and starts a new run there otherwise; see :func:`auto_resumed_config`.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from art_diffusion import ConfigError, MissingPathError, UserError
from art_diffusion.checkpoints import CheckpointError, UnsafeCheckpointError, load_checkpoint, stored_config
from art_diffusion.checkpoints.callbacks import rebase_paths
from art_diffusion.checkpoints.loading import COMMAND_ONLY
from art_diffusion.run.precision import resolve_precision
from art_diffusion.run.run_dir import LAST_CHECKPOINT, has_checkpoint

log = logging.getLogger(__name__)

#: Keys a resumed run may change: where and how long it runs, not what it trains.
RESUME_OVERRIDABLE = (
    "trainer.max_epochs",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "data.root",
    "data.val_root",
    "data.cache",
    "data.cache_dir",
    "data.num_workers",
    "data.pin_memory",
    "data.feature_store",
    "cpu_memory",
    "model.net.fused",
    "model.compile",
    "model.compile_options",
    "test",
    "trusted_classes",
)
DEFAULT_OUTPUTS = "outputs"
AUTO = "auto"  # resume=auto: continue this run's own dir if it has a checkpoint, else start it


#: The last part of every config key that says where a run writes. On resume each is recomputed from the run dir:
#: a path inside the stored run dir moves with it, one outside takes this command's value (refused if it has none).
WRITE_KEYS = ("output_dir", "dirpath", "save_dir", "report_dir", "default_root_dir", "log_dir", "tracking_uri")
#: Keys that name a file or folder inside one of those: a plain name, never a path.
NAME_KEYS = ("filename", "name", "version")
_SQLITE = "sqlite:///"


def _within(value, old: str, new: Path) -> str | None:
    """``value`` (a path under ``old``) moved under ``new``; None when it is not a path inside ``old``."""
    if not isinstance(value, str):
        return None
    if value.startswith(_SQLITE):  # the MLflow logger's store
        moved = _within(value.removeprefix(_SQLITE), old, new)
        return None if moved is None else _SQLITE + moved
    if not os.path.isabs(value) or not os.path.isabs(old):
        return None
    relative = os.path.relpath(os.path.normpath(value), os.path.normpath(old))
    if relative == ".":
        return str(new)
    return None if relative.startswith("..") else str(new / relative)


def _plain_name(value) -> bool:
    return value is None or isinstance(value, (int, float)) or (
        isinstance(value, str) and "/" not in value and "\\" not in value and not value.startswith(".."))


def own_paths(stored: dict, directory: Path, cfg: DictConfig, origin: Path) -> dict:
    """The stored config with every place it writes recomputed for the run dir ``directory``; never a path as the
    file gives it. A file whose config writes elsewhere (an edited checkpoint: ``dirpath=/etc``, a logger name
    ``../..``) is refused with one message, unless this command's own config gives that key a place in the run dir
    (a plain name).
    ``paths.root_dir`` and ``paths.data_dir`` are this command's; a demo's data root that must be generated again
    moves with ``data_dir``."""
    stored, problems = copy.deepcopy(stored), []
    paths = stored.get("paths") if isinstance(stored.get("paths"), dict) else {}
    old_dir, old_data = str(paths.get("output_dir") or ""), str(paths.get("data_dir") or "")

    def mine(dotted: str):
        try:
            return OmegaConf.select(cfg, dotted, default=None)
        except Exception:  # an interpolation this command cannot resolve: no value of its own
            return None

    def visit(node: dict, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                visit(value, dotted + ".")
            elif key in WRITE_KEYS and value is not None and not dotted.startswith("paths."):
                moved = _within(value, old_dir, directory) or _within(mine(dotted), str(directory), directory)
                node[key] = moved if moved else problems.append(f"{dotted}={value!r}")
            elif key in NAME_KEYS and dotted.startswith(("callbacks.", "logger.", "trainer.")) and \
                    not _plain_name(value):
                own = mine(dotted)  # this command's name for it, if it has a plain one
                node[key] = own if own is not None and _plain_name(own) else problems.append(f"{dotted}={value!r}")

    visit(stored, "")
    data = stored.get("data") if isinstance(stored.get("data"), dict) else {}
    root = data.get("root")
    if str(data.get("_target_", "")).endswith("DemoDataModule") and "data.root" not in _command_line_keys() and \
            not (isinstance(root, str) and (Path(root) / ".complete").is_file()):  # one that exists is only read
        moved = _within(root, old_data, Path(str(mine("paths.data_dir"))))
        data["root"] = moved if moved else problems.append(f"data.root={root!r} (demo data would be generated)")
    if problems:
        raise UnsafeCheckpointError(
            f"Refusing to resume from {origin}: its stored config writes outside its run dir ({', '.join(problems)});"
            f" a resumed run writes only into {directory}. The file was edited or made elsewhere: use another "
            "checkpoint, or start a new run from its weights with ckpt_path=.")
    stored["paths"] = {**paths, "output_dir": str(directory), "root_dir": mine("paths.root_dir"),
                       "data_dir": mine("paths.data_dir")}
    return stored


def find_run_to_resume(resume: str, outputs: str = DEFAULT_OUTPUTS) -> Path:
    """The run directory ``resume`` names: a run dir, its last.ckpt, or ``latest`` (newest under ``outputs``)."""
    if resume == "latest":
        candidates = sorted(Path(outputs).glob(f"**/{LAST_CHECKPOINT.parent}/*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise MissingPathError(
                f"resume=latest: no run under {Path(outputs).resolve()} has a checkpoint ({LAST_CHECKPOINT.parent}/). "
                "Pass the run directory instead: resume=outputs/<date>/<time>"
            )
        return candidates[-1].parents[1].resolve()
    path = Path(resume).expanduser()
    run_dir = path.parents[1] if path.is_file() and path.parent.name == "checkpoints" else path
    if not has_checkpoint(run_dir):
        raise MissingPathError(
            f"resume={resume}: {run_dir / LAST_CHECKPOINT.parent} holds no checkpoint. Pass a run directory made by "
            "scripts/train.py (it has checkpoints/last.ckpt), or resume=latest."
        )
    return run_dir.resolve()


_claimed: dict[str, str] = {}


def unique_dir(default: str) -> str:
    """``default`` made now by this process, or ``default_1``, ``default_2``, ... when another run made it first (two
    runs started in the same second): a new run's dir is its own before Hydra writes ``.hydra/`` into it. The same
    ``default`` gives the same dir for the rest of this process (Hydra resolves the run dir more than once)."""
    if default not in _claimed:
        base = Path(default)
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in range(10_000):
            candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            _claimed[default] = str(candidate)
            if len(_claimed) == 1:
                atexit.register(_remove_unused_claims)
            break
    return _claimed[default]


def _remove_unused_claims() -> None:
    """At exit: a dir :func:`unique_dir` made that stayed empty (Hydra resolved the default run dir, then used another:
    ``hydra.run.dir=``, a debug config's) is removed, with the empty date folders above it under the working dir."""
    cwd = Path.cwd().resolve()
    while _claimed:  # emptied: a script run again in this process (the tests' in-process runs) claims afresh
        path = Path(_claimed.popitem()[1]).resolve()
        with contextlib.suppress(OSError):
            path.rmdir()  # only if empty
            while cwd in path.parent.parents and not any(path.parent.iterdir()):
                path = path.parent
                path.rmdir()


def starts_fresh(resume: str | None) -> bool:
    """``resume`` unset: a new run (null in a config, the string "null" or "" where a resolver receives it)."""
    return resume in (None, "", "null")


def run_dir(resume: str | None, default: str) -> str:
    """Hydra's run dir: the resumed run's directory when ``resume`` is set, else a new dir of its own
    (:func:`unique_dir`; resume=auto continues the dir it is given with ``hydra.run.dir=``, which bypasses this)."""
    return unique_dir(default) if starts_fresh(resume) or resume == AUTO else str(find_run_to_resume(str(resume)))


def hydra_subdir(resume: str | None, stamp: str, directory: str | None = None) -> str:
    """Where Hydra saves this invocation's config: a resumed run keeps its original ``.hydra/`` untouched.

    ``directory``: the run dir, for resume=auto, which resumes only when the dir has a checkpoint.
    """
    if resume == AUTO:
        resuming = directory is not None and has_checkpoint(directory)
        return f".hydra/resumed_{stamp}" if resuming else ".hydra"
    return ".hydra" if starts_fresh(resume) else f".hydra/resumed_{stamp}"


def _command_line_keys() -> list[str]:
    if not HydraConfig.initialized():
        return []
    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return [override.key_or_group for override in parsed]


def _read_stored(path: Path, trusted: list[str]) -> dict:
    return stored_config(load_checkpoint(path), path, trusted)


def newest_loadable_checkpoint(directory: Path, trusted: list[str]) -> tuple[Path, dict]:
    """``last.ckpt`` and its stored config; if it cannot be read (a damaged copy, a disk error), the newest other
    checkpoint of the run that loads, with a warning saying which and why. A hostile config is refused, not skipped.
    Reads only: :func:`tidy_run_dir` readies the dir once this process owns it."""
    last = directory / LAST_CHECKPOINT
    try:
        return last, _read_stored(last, trusted)
    except UnsafeCheckpointError:
        raise
    except (CheckpointError, MissingPathError) as error:  # damaged, or never written (stopped before its save)
        reason = error if last.exists() else "it was never written"
    others = sorted((p for p in last.parent.glob("*.ckpt") if p.name != last.name),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for path in others:
        try:
            stored = _read_stored(path, trusted)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as error:
            log.warning("Cannot resume from %s either: %s", path, error)
            continue
        log.warning("%s is unreadable (%s). Resuming from %s instead, the newest checkpoint of the run that loads.",
                    last, reason, path)
        return path, stored
    raise CheckpointError(f"resume: {last} is unreadable ({reason}) and no other checkpoint in {last.parent} loads; "
                          "this run cannot be continued. Start a new run (ckpt_path= can take weights of a good file).")


def tidy_run_dir(directory: Path, checkpoint: Path) -> None:
    """Ready a resumed run dir, once this process owns it (``run.train.own_run_dir`` has removed the temporary files
    of writes killed half-way): an unreadable last.ckpt is moved aside to last.ckpt.unreadable when the run continues
    from another ``checkpoint`` (else Lightning would save the next last.ckpt as last-v1.ckpt beside it). Checked
    again here, under the lock: a last.ckpt that became readable since the run was prepared (its previous owner saved
    it) stops the resume."""
    last = directory / LAST_CHECKPOINT
    if Path(checkpoint).resolve() == last.resolve() or not last.exists():
        return
    try:
        load_checkpoint(last)
    except CheckpointError:
        aside = last.with_name(last.name + ".unreadable")
        last.replace(aside)
        log.warning("Moved the unreadable %s aside to %s", last, aside)
        return
    raise UserError(f"resume: {last} became readable while this run was being prepared (its previous owner saved "
                    "it as it ended); run the same command again to continue from it.")


def resumed_config(cfg: DictConfig, auto: bool = False) -> DictConfig:
    """The config a resumed run uses: the stored one, plus the allowed command-line overrides, ckpt_path set.

    ``auto`` (resume=auto, see :func:`auto_resumed_config`): any other command-line key is accepted too, as long as
    it gives the value the run was trained with.
    """
    directory = find_run_to_resume(str(cfg.resume))
    trusted = list(cfg.get("trusted_classes") or [])  # from this command line, never from the file
    checkpoint, stored = newest_loadable_checkpoint(directory, trusted)
    old_dir = str((stored.get("paths") or {}).get("output_dir") or directory)
    stored = own_paths(stored, directory, cfg, checkpoint)  # where it writes: recomputed, never from the file
    if Path(old_dir) != directory:
        log.info("Run dir moved from %s to %s: rebasing its paths", old_dir, directory)
        stored = rebase_paths(stored, old_dir, str(directory))
    # always: the checkpoint's callback states (best-model paths Lightning may delete) are rebased or dropped too
    stored.setdefault("callbacks", {})["rebase_checkpoint_paths"] = {
        "_target_": "art_diffusion.checkpoints.RebaseCheckpointPaths", "old": old_dir, "new": str(directory)}

    keys = [key for key in _command_line_keys() if key not in ("resume", "ckpt_path")]
    if auto:
        _refuse_changed_settings(cfg, stored, directory, [key for key in keys if key not in RESUME_OVERRIDABLE])
    refused = [] if auto else [key for key in keys if key not in RESUME_OVERRIDABLE]
    if refused:
        raise ConfigError(
            f"resume={cfg.resume} continues {directory} with the config it was trained with; {refused} cannot "
            f"change on resume (allowed: {list(RESUME_OVERRIDABLE)}). To train with other settings, start a new "
            f"run, e.g. with ckpt_path={checkpoint} to start from its weights."
        )
    resumed = OmegaConf.create(stored)
    for key in (f"model.{key}" for key in COMMAND_ONLY):  # how this process runs: this command's, never the file's
        stored_value = OmegaConf.select(resumed, key, default=None)
        if OmegaConf.select(resumed, "model", default=None) is not None and key not in keys:
            OmegaConf.update(resumed, key, OmegaConf.select(cfg, key, default=None), merge=False)
            if stored_value not in (None, False):
                log.info("%s comes from this command, not from the checkpoint (%s there): pass %s=... to set it",
                         key, stored_value, key)
    for key in keys:
        OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False)
    resumed.trusted_classes = trusted
    resumed.resume = str(directory)
    resumed.ckpt_path = str(checkpoint)
    log.info("Resuming %s from %s (overrides: %s)", directory, checkpoint, keys or "none")
    return resumed


def _leaves(cfg, key: str) -> dict[str, object]:
    """``key``'s resolved value in ``cfg``, as {dotted leaf key: value} (a config group's node gives all its leaves)."""
    value = OmegaConf.select(cfg, key)
    if not OmegaConf.is_config(value):
        return {key: value}
    flat = OmegaConf.to_container(value, resolve=True)
    leaves, stack = {}, [(key, flat)]
    while stack:
        prefix, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
        if items is None:
            leaves[prefix] = node
        for child, sub in items or ():
            stack.append((f"{prefix}.{child}", sub))
    return leaves


def _changed(cfg, stored, key: str) -> bool:
    """Whether the command gives ``key`` (a key or a config group) other values than the run was trained with."""
    mine, theirs = _leaves(cfg, key), _leaves(stored, key)
    return any(mine.get(k) != theirs.get(k) for k in mine.keys() | theirs.keys() if k not in RESUME_OVERRIDABLE)


def _refuse_changed_settings(cfg: DictConfig, stored: dict, directory: Path, keys: list[str]) -> None:
    """resume=auto reruns the original command: its keys must give the values the run was trained with."""
    mine = copy.deepcopy(cfg)
    with open_dict(mine):  # trainer.precision=auto stands for what it resolves to, as the stored run's did
        mine.trainer.precision = resolve_precision(mine.trainer.precision, mine.trainer.get("accelerator", "auto"))[0]
    changed = [key for key in keys if _changed(mine, OmegaConf.create(stored), key)]
    if changed:
        raise UserError(
            f"resume=auto: {directory} was trained with other values of {changed} than this command gives; a run "
            f"continues with the settings it started with (only {list(RESUME_OVERRIDABLE)} may change). Use the "
            f"original values, or another run dir (hydra.run.dir=...) for a new run."
        )


def auto_resumed_config(cfg: DictConfig) -> DictConfig:
    """``resume=auto``: the same command, run again in the same dir (a requeued cluster job), picks up where it stopped.

    The run dir is Hydra's (``hydra.run.dir=...``, or the sweep job's dir). With a ``last.ckpt`` there, the run
    continues exactly as ``resume=<that dir>`` would; the command's other overrides must then have the values the run
    was trained with. Without one, a new run starts there (from ``ckpt_path``'s weights, if given).
    """
    directory = Path(cfg.paths.output_dir).resolve()
    if not has_checkpoint(directory):
        log.info("resume=auto: %s has no checkpoint yet, starting a new run there", directory)
        fresh = cfg.copy()
        fresh.resume = None
        return fresh
    log.info("resume=auto: %s has a checkpoint, continuing it", directory)
    again = cfg.copy()
    again.resume = str(directory)
    return resumed_config(again, auto=True)
