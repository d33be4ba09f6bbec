"""The closed registry of classes a config may instantiate, and the one check that runs before any config is built.

A config read from a file (a checkpoint's stored config, a resumed run's ``last.ckpt``) is untrusted: Hydra's
``instantiate`` calls whatever ``_target_`` names, so ``art_diffusion.storage.files.os.system`` would run a
shell command. :func:`check_targets` walks every node first and refuses the whole config unless

- every ``_target_`` resolves to *exactly* (``is``) one of the classes in :data:`REGISTRY` (or a class the user
  passed in ``trusted_classes`` on the command line), not a function, a module or any other attribute reachable
  under a trusted package; targets outside the registry's packages are refused without being imported;
- ``_partial_`` appears only beside such a target, and no other Hydra key (``_args_``, ``_convert_``,
  ``_recursive_``, ...) appears at all: the project's configs use none of them;
- the values are plain data (no tensors, no interpolations ``${...}`` that would resolve on instantiation).

Every path that instantiates a config calls it: train (fresh or resumed), resume, reconstruct, evaluate, generate.
``tests/test_registry.py`` checks that every ``_target_`` under ``conf/`` is in the registry, so a new config
class cannot ship without this list being reviewed.

Classes that moved keep working in checkpoints written before the move: :func:`renamed_targets` rewrites their old
dotted paths (:data:`RENAMED`, each to a registry entry) before the check; nothing else of a stored config changes.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from hydra.utils import get_class

from art_diffusion import UserError

#: The classes the project's own configs name (conf/, resume's RebaseCheckpointPaths, and the AdvancedProfiler the
#: debugging docs swap in). Reviewed by hand.
REGISTRY: tuple[str, ...] = (
    # model, network, schedule, loss (conf/model, conf/loss)
    "art_diffusion.lightning.ReconstructionModule",
    "art_diffusion.lightning.DiffusionModule",
    "art_diffusion.nets.ConvDiffusionModel",
    "art_diffusion.nets.ConvDenoiser",
    "art_diffusion.nets.UNet",
    "art_diffusion.nets.DiffusersUNet",
    "art_diffusion.diffusion.NoiseSchedule",
    "art_diffusion.losses.HybridLoss",
    "art_diffusion.losses.DiffusionLoss",
    # data (conf/data)
    "art_diffusion.data.ArtDataModule",
    "art_diffusion.data.DemoDataModule",
    # callbacks (conf/callbacks; RebaseCheckpointPaths is added by resume.py)
    "art_diffusion.lightning.ReconstructionLogger",
    "art_diffusion.lightning.SampleLogger",
    "art_diffusion.lightning.GenerationScores",
    "art_diffusion.checkpoints.RNGStateCheckpoint",
    "art_diffusion.checkpoints.CheckpointOnSigterm",
    "art_diffusion.checkpoints.LastCheckpoint",
    "art_diffusion.checkpoints.RebaseCheckpointPaths",
    "lightning.pytorch.callbacks.ModelCheckpoint",
    "lightning.pytorch.callbacks.LearningRateMonitor",
    "lightning.pytorch.callbacks.EarlyStopping",
    # loggers, trainer, profiler, optimisation (conf/logger, trainer, debug; conf/optim, scheduler: _partial_ ones)
    "art_diffusion.lightning.TensorBoardLogger",
    "lightning.pytorch.loggers.CSVLogger",
    "lightning.pytorch.loggers.MLFlowLogger",
    "lightning.pytorch.loggers.WandbLogger",
    "lightning.pytorch.profilers.SimpleProfiler",
    "lightning.pytorch.profilers.AdvancedProfiler",  # debug=profiler's cProfile variant (docs/loggers-and-debugging.md)
    "lightning.pytorch.Trainer",
    "lightning.pytorch.strategies.DDPStrategy",
    "torch.optim.Adam",
    "torch.optim.lr_scheduler.StepLR",
)
#: Old dotted paths of registry classes that moved (stored in older checkpoints) -> where they are now.
RENAMED: dict[str, str] = {
    "art_diffusion.callbacks.ReconstructionLogger": "art_diffusion.lightning.ReconstructionLogger",
    "art_diffusion.callbacks.SampleLogger": "art_diffusion.lightning.SampleLogger",
    "art_diffusion.callbacks.GenerationScores": "art_diffusion.lightning.GenerationScores",
    "art_diffusion.callbacks.RNGStateCheckpoint": "art_diffusion.checkpoints.RNGStateCheckpoint",
    "art_diffusion.callbacks.CheckpointOnSigterm": "art_diffusion.checkpoints.CheckpointOnSigterm",
    "art_diffusion.callbacks.LastCheckpoint": "art_diffusion.checkpoints.LastCheckpoint",
    "art_diffusion.callbacks.RebaseCheckpointPaths": "art_diffusion.checkpoints.RebaseCheckpointPaths",
    "art_diffusion.loggers.TensorBoardLogger": "art_diffusion.lightning.TensorBoardLogger",
}
#: Hydra keys a config may use; every other ``_name_`` key (``_args_``, ``_convert_``, ``_recursive_``) is refused.
ALLOWED_SPECIAL_KEYS = ("_target_", "_partial_")
_PLAIN = (str, int, float, bool, type(None))
#: How deeply a config may nest (the project's go 4 levels deep): deeper is refused before anything recurses into it.
MAX_DEPTH = 32


class UnsafeConfigError(UserError):
    """A config names something outside the registry of classes; nothing of it was instantiated."""


def check_depth(node: Any, origin: str) -> None:
    """Raise :class:`UnsafeConfigError` when ``node`` nests more than :data:`MAX_DEPTH` levels (measured without
    recursion, so a file nested 100 000 deep is refused instead of exhausting Python's stack)."""
    stack = [(node, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UnsafeConfigError(f"Refusing {origin}: it nests more than {MAX_DEPTH} levels deep (the project's "
                                    "configs nest 4); the file was edited or damaged, use another one.")
        children = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
        stack += [(child, depth + 1) for child in children]


def renamed_targets(node: Any) -> Any:
    """``node`` with every ``_target_`` that names a moved class (:data:`RENAMED`) set to its current path."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        return {key: RENAMED.get(value, value) if key == "_target_" and isinstance(target, str) else
                renamed_targets(value) for key, value in node.items()}
    if isinstance(node, list):
        return [renamed_targets(item) for item in node]
    return node


@cache
def _registry_classes() -> frozenset[type]:
    return frozenset(get_class(path) for path in REGISTRY)


def _user_classes(names: Iterable[str]) -> frozenset[type]:
    """The classes of ``trusted_classes`` (given on the command line, so importing them is the user's choice)."""
    classes = set()
    for name in names:
        try:
            classes.add(get_class(str(name)))
        except Exception as exc:
            raise UserError(f"trusted_classes: {name!r} is not an importable class ({exc}); list the exact dotted "
                            "paths of classes, e.g. trusted_classes='[my_pkg.callbacks.MyCallback]'.") from None
    return frozenset(classes)


def _resolve_loaded(target: str) -> Any:
    """What the dotted path ``target`` names, looked up in modules already imported: a file never makes us import."""
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        obj = sys.modules.get(".".join(parts[:split]))
        if obj is not None:
            break
    else:
        return None
    for name in parts[split:]:
        if not name.isidentifier():
            return None
        obj = getattr(obj, name, None)
    return obj


def _callable(obj: Any) -> bool:
    return obj is not None and not inspect.isclass(obj)


def _kind(resolved: Any) -> str:
    if resolved is None:
        return "which names no class of an imported module"
    if inspect.isclass(resolved):
        return "a class outside the registry"
    return f"which is a {type(resolved).__name__}, not a class"


def _key_path(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def check_targets(node: Any, origin: str, trusted_classes: Iterable[str] = (), where: str = "") -> None:
    """Raise :class:`UnsafeConfigError` (naming ``origin`` and the key path) unless ``node`` only instantiates
    registry classes or ``trusted_classes`` (exact dotted paths the user gave on the command line)."""
    check_depth(node, origin)
    allowed = _registry_classes() | _user_classes(trusted_classes)

    def refuse(what: str, at: str, hint: str = "") -> None:
        raise UnsafeConfigError(
            f"Refusing {origin}: {what} at '{at or '<root>'}'. A config may only instantiate the project's own "
            "classes (art_diffusion.checkpoints.registry.REGISTRY); nothing from it was run." + hint)

    def walk(value: Any, at: str) -> None:
        if isinstance(value, Mapping):
            walk_mapping(value, at)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(item, f"{at}[{index}]")
        elif isinstance(value, str) and "${" in value:
            refuse(f"an interpolation {value!r} (stored configs are resolved; this one would run resolvers)", at)
        elif not isinstance(value, _PLAIN):
            refuse(f"a {type(value).__name__}, which is not plain config data", at)

    def walk_mapping(mapping: Mapping, at: str) -> None:
        for key in mapping:
            if not isinstance(key, str):
                refuse(f"a non-string key {key!r}", at)
            if key.startswith("_") and key.endswith("_") and key not in ALLOWED_SPECIAL_KEYS:
                refuse(f"the Hydra key {key!r} (the project's configs use only {list(ALLOWED_SPECIAL_KEYS)})",
                       _key_path(at, key))
        target = mapping.get("_target_")
        if "_target_" in mapping:
            resolved = _resolve_loaded(target) if isinstance(target, str) else None
            # the object itself, not its name: a function or module reachable under a trusted package fails here
            if not (inspect.isclass(resolved) and any(resolved is cls for cls in allowed)):
                refuse(f"_target_ {target!r}, {_kind(resolved)}", _key_path(at, "_target_"),
                       f" If you wrote this config and trust the class {target!r}, pass trusted_classes='[{target}]'."
                       if isinstance(target, str) and "${" not in target and not _callable(resolved) else "")
        if "_partial_" in mapping and ("_target_" not in mapping or not isinstance(mapping["_partial_"], bool)):
            refuse("_partial_ without a registered _target_ (or not true/false)", _key_path(at, "_partial_"))
        for key, value in mapping.items():
            walk(value, _key_path(at, key))

    walk(node, where)
