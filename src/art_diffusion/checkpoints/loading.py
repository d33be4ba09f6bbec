"""Loading checkpoints without trusting them: plain data only, clear errors, and a model rebuilt from the stored config.

A checkpoint is untrusted input. ``torch.load(weights_only=True)`` refuses any pickle that names code, and the
stored config passes :func:`art_diffusion.checkpoints.registry.check_targets` (only registered classes) before anything
of it is instantiated, so opening a file never runs code from it.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from torch import nn

from art_diffusion import MissingPathError, UserError
from art_diffusion.checkpoints.registry import check_depth, check_targets, renamed_targets
from art_diffusion.run.validate import check_stored_values

#: Checkpoint entry holding the run's resolved config (plain dicts), enough to rebuild model and data settings.
CONFIG_KEY = "art_diffusion_config"
#: Keys of the ``model`` config that say how this process runs the model, never taken from a file: a tool builds the
#: model without them, a resumed run takes this command's values (resume.py).
COMMAND_ONLY = ("compile", "compile_options")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """Refused: the file is not plain data (tensors, numbers, strings, containers), so loading it could run code."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, empty or not a PyTorch checkpoint at all."""


class WrongModelError(CheckpointError, ValueError):
    """A checkpoint of another kind of model than the command needs (a reconstructor given to generate.py)."""


class IncompatibleCheckpointError(CheckpointError):
    """The weights do not fit the configured model (missing, unexpected or differently shaped tensors)."""


def torch_error_line(exc: Exception) -> str:
    """The one informative line of torch's long weights-only message (e.g. 'unsupported GLOBAL posix.system')."""
    for line in str(exc).splitlines():
        if re.search(r"unsupported GLOBAL|Unsupported operand|WeightsUnpickler error: \S", line):
            return line.strip()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if " " not in first else first  # KeyError '105' says nothing alone


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    train_command: str = "python scripts/train.py") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say which file and why."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingPathError(f"Checkpoint not found: {path}. Pass ckpt_path=<run dir>/checkpoints/best.ckpt "
                               f"(or last.ckpt) of a `{train_command} ...` run.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: torch.load(weights_only=True) rejected it ({torch_error_line(exc)}). A "
            "checkpoint may hold only tensors and plain Python data; this file is corrupt, not a checkpoint, or made "
            "to run code when opened. Use checkpoints written by this project's training, or re-save the weights as a "
            "plain state dict from a trusted environment."
        ) from None
    except Exception as exc:  # garbage bytes fail anywhere in the unpickler (KeyError, IndexError, ...)
        raise CorruptCheckpointError(
            f"Cannot read checkpoint {path} ({path.stat().st_size} bytes): {type(exc).__name__}: "
            f"{torch_error_line(exc)}. The file is truncated or damaged (an interrupted copy or write?); "
            "use another checkpoint of the run, e.g. checkpoints/last.ckpt or an epoch_XXX.ckpt."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CorruptCheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    return checkpoint


def stored_config(checkpoint: Mapping, path: str | Path, trusted_classes: Iterable[str] = ()) -> dict[str, Any]:
    """The run's resolved config that training stored in the checkpoint (see NetworkModule.on_save_checkpoint),
    refused unless it passes :func:`check_targets` (``trusted_classes``: extra classes the user vouches for)."""
    config = checkpoint.get(CONFIG_KEY)
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path} has no '{CONFIG_KEY}' entry, so the model cannot be rebuilt from it alone. Only checkpoints "
            "written by scripts/train.py carry their config; retrain, or load the weights by hand."
        )
    origin = f"the config stored in {path}"
    check_depth(config, origin)
    config = renamed_targets(config)  # checkpoints written before a registry class moved
    check_targets(config, origin, trusted_classes)
    check_stored_values(config, origin)  # also: every class is given its own arguments, of its types
    return config


def _describe_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> list[str]:
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(found[k].shape) if isinstance(found[k], torch.Tensor) else type(found[k]).__name__}"
        f" vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in found and not (isinstance(found[k], torch.Tensor) and found[k].shape == expected[k].shape)
    ]
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong:
        problems.append("shape mismatch " + "; ".join(wrong))
    return problems


def check_state_dict(model: nn.Module, state: Mapping[str, Any], path: str | Path, what: str = "the model") -> None:
    """Raise :class:`IncompatibleCheckpointError` naming every key that does not fit ``model``."""
    problems = _describe_mismatch(model.state_dict(), state)
    if problems:
        raise IncompatibleCheckpointError(
            f"{path} does not fit {what}: " + "; ".join(problems) + ". Was it trained with a different model "
            "config (e.g. model.net.base_channels)? Use the config it was trained with."
        )


def check_checkpoint_fits(module: nn.Module, path: str | Path) -> None:
    """Before resuming from ``path``: it loads safely and every tensor fits ``module`` (else a clear error)."""
    check_state_dict(module, _state_dict(load_checkpoint(path), path), path, "the configured model")


def _state_dict(checkpoint: Mapping, path: str | Path) -> Mapping[str, Any]:
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise CorruptCheckpointError(f"{path} has no 'state_dict' entry: not a Lightning checkpoint of this project.")
    return state


def _module_class(target: str, path: str | Path, expected: type | None) -> type:
    """The class ``target`` names (already checked to be a registered one), refused when it is not an ``expected``."""
    cls = get_class(target)
    if expected is not None and not issubclass(cls, expected):
        raise WrongModelError(
            f"{path} holds a {cls.__name__}, which {getattr(cls, 'TASK', 'does something else')}; this needs a model "
            f"that {getattr(expected, 'TASK', expected.__name__)}. Train one with "
            f"`{getattr(expected, 'TRAIN_COMMAND', 'python scripts/train.py')} ...` and pass its checkpoint."
        )
    return cls


def load_module(
    path: str | Path,
    device: str | torch.device = "cpu",
    expected: type | None = None,
    trusted_classes: Iterable[str] = (),
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained LightningModule (eval mode, on ``device``) and its run config, from a checkpoint path alone.

    The project's one checkpoint loader for inference: the module is rebuilt from the ``model`` config the
    checkpoint stores, without its optimizer and scheduler (inference needs neither), after the whole stored config
    passed :func:`check_targets`; ``expected`` (a LightningModule class) refuses a checkpoint of another kind.
    """
    hint = getattr(expected, "TRAIN_COMMAND", "python scripts/train.py")
    checkpoint = load_checkpoint(path, train_command=hint)
    config = stored_config(checkpoint, path, trusted_classes)
    module_config = config.get("model")
    if not isinstance(module_config, Mapping) or not isinstance(module_config.get("_target_"), str):
        raise CheckpointError(f"{path}: its stored config has no model (a _target_ with its net) to rebuild from.")
    # without what training needs, and without the file's compile settings: torch.compile options can name programs
    # to run (inductor's cpp.cxx), and a file never chooses what runs
    module_config = {k: v for k, v in module_config.items() if k not in ("optimizer", "scheduler", *COMMAND_ONLY)}
    _module_class(module_config["_target_"], path, expected)
    module = instantiate(module_config, optimizer=None, scheduler=None)
    state = _state_dict(checkpoint, path)
    # the network first, its keys named as in the network; then whatever else the module keeps (the EMA)
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    check_state_dict(module.net, net_state, path, f"the network its config describes ({type(module.net).__name__})")
    check_state_dict(module, state, path, f"the model its config describes ({module_config['_target_']})")
    module.load_state_dict(state)
    module.on_load_checkpoint(checkpoint)
    return module.to(device).eval(), config


def load_net(
    path: str | Path, device: str | torch.device = "cpu", trusted_classes: Iterable[str] = ()
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network alone (eval mode, on ``device``) and the run config: :func:`load_module`'s ``net``."""
    module, config = load_module(path, device, trusted_classes=trusted_classes)
    return module.net, config
