"""Loading checkpoints without trusting them: plain data only, clear errors, and a model rebuilt from the stored config.

A checkpoint is untrusted input. ``torch.load(weights_only=True)`` refuses any pickle that names code, and the
stored config passes :func:`art_diffusion.checkpoints.registry.check_targets` (only registered classes) before anything
of it is instantiated, so opening a file never runs code from it.

Weights read from a file never pass unchecked either, by one mechanism for every loader (:func:`load_checkpoint`
for ``.ckpt`` files, ``pretrained.folder.read_net`` for an exported ``model.safetensors``): the file's own checksums
(the CRC-32 of each zip member, which ``torch.load`` does not verify; the sha256 an export records), then
:func:`check_tensors` (no NaN or infinity, no negative BatchNorm variance) and :func:`check_state_dict` (the keys,
shapes and kinds of dtype the model has). A damaged file is refused with one message naming it, the tensor and the fix.
"""

from __future__ import annotations

import pickle
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from torch import nn

from art_diffusion import MissingPathError, UserError
from art_diffusion.checkpoints.registry import check_depth, check_targets, renamed_targets
from art_diffusion.run.validate import check_stored_values
from art_diffusion.storage import zip_damage

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


class DamagedCheckpointError(CorruptCheckpointError):
    """Bytes that fail the file's own checksum, or tensors no trained model holds (NaN or infinity, a negative BatchNorm
    variance, an integer tensor where the model has a floating-point one): the file changed after it was written."""


#: the fix named by every refusal of a damaged checkpoint
DAMAGED_FIX = ("the file is damaged (a disk or copy error, or an edit): use another checkpoint of the run (best.ckpt, "
               "last.ckpt, an epoch_XXX.ckpt); to resume= the run, copy the newest good one over it")


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
    bad_member = zip_damage(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if bad_member:  # the pickle's own bytes are damaged: nothing was made to run code
            raise DamagedCheckpointError(f"{path}: {_damaged_bytes({}, *bad_member)}; {DAMAGED_FIX}.") from None
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: torch.load(weights_only=True) rejected it ({torch_error_line(exc)}). A "
            "checkpoint may hold only tensors and plain Python data; this file is corrupt, not a checkpoint, or made "
            "to run code when opened. Use checkpoints written by this project's training, or re-save the weights as a "
            "plain state dict from a trusted environment."
        ) from None
    except Exception as exc:  # garbage bytes fail anywhere in the unpickler (KeyError, IndexError, ...)
        if bad_member:
            raise DamagedCheckpointError(f"{path}: {_damaged_bytes({}, *bad_member)}; {DAMAGED_FIX}.") from None
        raise CorruptCheckpointError(
            f"Cannot read checkpoint {path} ({path.stat().st_size} bytes): {type(exc).__name__}: "
            f"{torch_error_line(exc)}. The file is truncated or damaged (an interrupted copy or write?); "
            "use another checkpoint of the run, e.g. checkpoints/last.ckpt or an epoch_XXX.ckpt."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CorruptCheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    if bad_member:
        raise DamagedCheckpointError(f"{path}: {_damaged_bytes(checkpoint, *bad_member)}; {DAMAGED_FIX}.")
    for name in ("state_dict", "optimizer_states"):  # the weights and what resuming trains them with
        check_tensors(dict(_tensors(checkpoint.get(name), name)), path)
    return checkpoint


def peek_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint that :func:`load_checkpoint` already checked in this process, or that this run wrote, memory-mapped:
    for reading a counter (epoch, step) without reading or checking its tensors again."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _tensors(node: Any, at: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts and lists, with its key path (``optimizer_states[0].state.3.exp_avg``)."""
    if isinstance(node, torch.Tensor):
        yield at, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _tensors(value, f"{at}.{key}" if at else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _tensors(value, f"{at}[{index}]")


def _damaged_bytes(checkpoint: Mapping, member: str, crc: int | None) -> str:
    """What fails the zip's checksum: the tensor whose stored bytes are ``member``'s (found by their CRC-32)."""
    if crc is not None and re.fullmatch(r"[^/]+/data/\d+", member):
        for key, tensor in _tensors(checkpoint, ""):
            storage = torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage().cpu())
            if zlib.crc32(storage.numpy()) == crc:
                return f"the bytes of tensor '{key}' (zip member {member}) fail the CRC-32 checksum the file records"
    return f"zip member {member} fails the CRC-32 checksum the file records"


def _kind(tensor: torch.Tensor) -> str:
    if tensor.is_floating_point():
        return "floating-point"
    if tensor.is_complex():
        return "complex"
    return "boolean" if tensor.dtype == torch.bool else "integer"


def _damaged(origin: str | Path, problems: list[str], fix: str) -> DamagedCheckpointError:
    more = f" (and {len(problems) - 1} more damaged tensor(s))" if len(problems) > 1 else ""
    return DamagedCheckpointError(f"{origin}: {problems[0]}{more}; {fix}.")


def non_finite(state: Mapping[str, Any]) -> dict[str, int]:
    """The floating-point tensors of ``state`` that hold a NaN or an infinity, with how many such values each; what
    loading refuses (:func:`check_tensors`) and saving too (``AtomicCheckpointIO``).

    Cost: one norm per tensor, all in one call per dtype (``torch._foreach_norm``, what ``clip_grad_norm_`` uses: a
    loop of small reductions in Python costs far more, most of all with threads on a busy CPU); a NaN or an infinity
    makes its tensor's norm non-finite, and only such a tensor (or one whose huge finite values overflow the norm)
    is checked value by value. See benchmarks/weight_checks.py."""
    floats = [(k, v) for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
    groups: dict[tuple, list[int]] = {}
    for index, (_, value) in enumerate(floats):
        groups.setdefault((value.device, value.dtype), []).append(index)
    found = {}
    for indices in groups.values():
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm([floats[i][1].detach() for i in indices]))
        for i in torch.nonzero(~torch.isfinite(norms)).flatten().tolist():
            key, value = floats[indices[i]]
            count = int((~torch.isfinite(value.detach())).sum())
            if count:
                found[key] = count
    return {key: found[key] for key, _ in floats if key in found}  # in the order of state


def check_tensors(state: Mapping[str, Any], origin: str | Path, fix: str = DAMAGED_FIX) -> None:
    """Raise :class:`DamagedCheckpointError` naming ``origin``, the first bad tensor and ``fix`` when a floating-point
    tensor of ``state`` holds a NaN or an infinity (:func:`non_finite`), or a BatchNorm ``running_var`` a negative
    value: no trained model holds either (training refuses to save non-finite weights), so the file was damaged."""
    bad = non_finite(state)
    problems = []
    for key, value in state.items():
        if key in bad:
            problems.append(f"tensor '{key}' holds {bad[key]} NaN or infinite value(s) of {value.numel()}")
        elif key.endswith("running_var") and isinstance(value, torch.Tensor) and value.is_floating_point() \
                and bool((value < 0).any()):
            problems.append(f"tensor '{key}' (a BatchNorm variance) holds {int((value < 0).sum())} negative value(s)")
    if problems:
        raise _damaged(origin, problems, fix)


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


def check_state_dict(model: nn.Module, state: Mapping[str, Any], path: str | Path, what: str = "the model",
                     fix: str = DAMAGED_FIX) -> None:
    """Raise :class:`IncompatibleCheckpointError` naming every key that does not fit ``model`` (missing, unexpected,
    of another shape), :class:`DamagedCheckpointError` naming a tensor of another kind of dtype than the model's: an
    integer tensor for a floating-point parameter, a float for an integer buffer such as ``num_batches_tracked``
    (float64, bfloat16 or float16 for a float32 parameter is a cast ``load_state_dict`` makes, and passes)."""
    expected = model.state_dict()
    problems = _describe_mismatch(expected, state)
    if problems:
        raise IncompatibleCheckpointError(
            f"{path} does not fit {what}: " + "; ".join(problems) + ". Was it trained with a different model "
            "config (e.g. model.net.base_channels)? Use the config it was trained with."
        )
    kinds = [f"tensor '{key}' is {value.dtype} where {what} has {expected[key].dtype}"
             for key, value in state.items() if _kind(value) != _kind(expected[key])]
    if kinds:
        raise _damaged(path, kinds, fix)


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
