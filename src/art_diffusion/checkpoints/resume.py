"""Resume a run in place: ``python scripts/train.py resume=RUN_DIR`` (or ``resume=latest``, or ``resume=auto``).

The run continues in its own directory (Hydra's run dir is pointed there, see ``conf/hydra/default.yaml``) from
``checkpoints/last.ckpt``, with the config stored in that checkpoint: the settings it was trained with, not the
defaults of today's config files. Only the keys in :data:`RESUME_OVERRIDABLE` may change on the command line.
``resume=auto`` (for jobs a cluster may stop and start again) continues the run dir Hydra gives this run, if it has
a last.ckpt, and starts a new run there otherwise; see :func:`auto_resumed_config`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from art_diffusion import ConfigError, MissingPathError, UserError
from art_diffusion.checkpoints import CheckpointError, UnsafeCheckpointError, load_checkpoint, stored_config
from art_diffusion.checkpoints.callbacks import rebase_paths
from art_diffusion.run.precision import resolve_precision
from art_diffusion.run.run_dir import LAST_CHECKPOINT

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
    "test",
    "trusted_classes",
)
DEFAULT_OUTPUTS = "outputs"
AUTO = "auto"  # resume=auto: continue this run's own dir if it has a checkpoint, else start it


def find_run_to_resume(resume: str, outputs: str = DEFAULT_OUTPUTS) -> Path:
    """The run directory ``resume`` names: a run dir, its last.ckpt, or ``latest`` (newest under ``outputs``)."""
    if resume == "latest":
        candidates = sorted(Path(outputs).glob(f"**/{LAST_CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise MissingPathError(
                f"resume=latest: no run under {Path(outputs).resolve()} has {LAST_CHECKPOINT}. "
                "Pass the run directory instead: resume=outputs/<date>/<time>"
            )
        return candidates[-1].parents[1].resolve()
    path = Path(resume).expanduser()
    run_dir = path.parents[1] if path.is_file() and path.parent.name == "checkpoints" else path
    if not (run_dir / LAST_CHECKPOINT).is_file():
        raise MissingPathError(
            f"resume={resume}: {run_dir / LAST_CHECKPOINT} does not exist. Pass a run directory made by "
            "scripts/train.py (it has checkpoints/last.ckpt), or resume=latest."
        )
    return run_dir.resolve()


def run_dir(resume: str | None, default: str) -> str:
    """Hydra's run dir: the resumed run's directory when ``resume`` is set, else ``default``."""
    return default if resume in (None, "", "null", AUTO) else str(find_run_to_resume(str(resume)))


def hydra_subdir(resume: str | None, stamp: str, directory: str | None = None) -> str:
    """Where Hydra saves this invocation's config: a resumed run keeps its original ``.hydra/`` untouched.

    ``directory``: the run dir, for resume=auto, which resumes only when the dir has a checkpoint.
    """
    if resume == AUTO:
        resuming = directory is not None and (Path(directory) / LAST_CHECKPOINT).is_file()
        return f".hydra/resumed_{stamp}" if resuming else ".hydra"
    return ".hydra" if resume in (None, "", "null") else f".hydra/resumed_{stamp}"


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
    except CheckpointError as error:
        reason = error
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
    """Ready a resumed run dir, once this process owns it: temporary files of saves killed half-way are removed, and
    an unreadable last.ckpt is moved aside to last.ckpt.unreadable when the run continues from another ``checkpoint``
    (else Lightning would save the next last.ckpt as last-v1.ckpt beside it). Checked again here, under the lock:
    a last.ckpt that became readable since the run was prepared (its previous owner saved it) stops the resume."""
    last = directory / LAST_CHECKPOINT
    for leftover in sorted(last.parent.glob("*.ckpt.*.tmp")):
        log.info("Removing %s, left by a save that was interrupted", leftover)
        leftover.unlink(missing_ok=True)
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
    old_dir = stored.get("paths", {}).get("output_dir")
    if old_dir and Path(old_dir) != directory:
        log.info("Run dir moved from %s to %s: rebasing its paths", old_dir, directory)
        stored = rebase_paths(stored, old_dir, str(directory))
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
    if not (directory / LAST_CHECKPOINT).is_file():
        log.info("resume=auto: %s has no %s yet, starting a new run there", directory, LAST_CHECKPOINT)
        fresh = cfg.copy()
        fresh.resume = None
        return fresh
    log.info("resume=auto: %s has %s, continuing it", directory, LAST_CHECKPOINT)
    again = cfg.copy()
    again.resume = str(directory)
    return resumed_config(again, auto=True)
