"""The exported folder: ``model.safetensors`` (the network's weights), ``config.json`` (how to rebuild it), read back
without trusting either.

Opening a folder reads JSON and safetensors only (no pickle, no ``torch.load``). The weights are checked before they are
used: against the sha256 that export records in ``config.json`` (``weights_sha256``; a folder without it, exported
before it was written or with it removed on purpose, loads with a warning that its weights are unchecked), then by the
checks every loader of weights shares (:func:`art_diffusion.checkpoints.loading.check_tensors` and
``check_state_dict``). ``config.json`` is untrusted: it must hold exactly the keys below, no value may look like a path,
every ``_target_`` passes the class registry (:func:`art_diffusion.checkpoints.registry.check_targets`) and must be a
network of the task, the constructor arguments must be the class's own, and the values pass the rules training applies
(:func:`art_diffusion.run.validate.check_stored_values`). Anything else is refused with one message.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from torch import nn

from art_diffusion import UserError, __version__
from art_diffusion.checkpoints.arguments import argument_problems
from art_diffusion.checkpoints.loading import check_state_dict, check_tensors
from art_diffusion.checkpoints.registry import check_depth, check_targets
from art_diffusion.run.validate import NETS, check_stored_values
from art_diffusion.storage import atomic_write, file_sha256, read_json, write_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
ONNX_FILE = "model.onnx"
FORMAT = "art-diffusion-pretrained"
FORMAT_VERSION = 1
#: task -> the LightningModule whose networks it may hold (its networks: art_diffusion.run.validate.NETS)
TASKS = {"reconstruct": "art_diffusion.lightning.ReconstructionModule",
         "generate": "art_diffusion.lightning.DiffusionModule"}
#: task -> the pixel ranges of its inputs and outputs (no mean/std normalisation anywhere)
NORMALISATION = {"reconstruct": {"input_range": [0.0, 1.0], "output_range": [0.0, 1.0]},
                 "generate": {"model_range": [-1.0, 1.0], "output_range": [0.0, 1.0]}}
#: task -> which weights model.safetensors holds: the trained net, or a DDPM's EMA of it (what it samples with)
WEIGHTS = {"reconstruct": "net", "generate": "ema"}
KEYS = ("format", "format_version", "art_diffusion_version", "task", "net", "image_size", "normalisation",
        "class_names", "weights")
DIFFUSION_KEYS = ("schedule", "prediction", "num_classes")
log = logging.getLogger(__name__)

#: the sha256 (hex) of model.safetensors, which safetensors itself does not checksum; optional: a folder exported
#: before export wrote it (or with it removed) loads with a warning that its weights are unchecked
SHA256_KEY = "weights_sha256"
EXPORT_AGAIN = "export the folder again with `python scripts/export.py ckpt_path=... output_dir=...`"
#: the fix named when the weights are damaged
DAMAGED_FIX = f"the file is damaged (a disk or copy error, or an edit); {EXPORT_AGAIN}"
MAX_CONFIG_BYTES = 1 << 20


class PretrainedFolderError(UserError, ValueError):
    """An exported folder that cannot be loaded as it is: the message names the file and what is wrong."""


def folder_config(task: str, run_config: Mapping, class_names: list[str] | None) -> dict[str, Any]:
    """The ``config.json`` of a model trained with ``run_config`` (a checkpoint's stored config)."""
    model = run_config["model"]
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "art_diffusion_version": __version__,
        "task": task,
        "net": dict(model["net"]),
        "image_size": int(model["image_size"] if task == "generate" else run_config["data"]["image_size"]),
        "normalisation": NORMALISATION[task],
        "class_names": None if class_names is None else list(class_names),
        "weights": WEIGHTS[task],
    }
    if task == "generate":
        config["diffusion"] = {"schedule": dict(model["schedule"]), "prediction": model.get("prediction", "eps"),
                               "num_classes": model.get("num_classes")}
    return config


def write_weights(net: nn.Module, path: Path) -> str:
    """The network's state dict as safetensors, atomically (tensors copied contiguous and unshared); returns the
    file's sha256 (hex), which config.json records (:data:`SHA256_KEY`)."""
    from safetensors.torch import save

    state = {key: value.detach().cpu().contiguous().clone() for key, value in net.state_dict().items()}
    # to bytes, then the one atomic write (safetensors' own save_file would create the file readable by its owner only)
    data = save(state, metadata={"format": "pt", "art_diffusion_version": __version__})
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def write_config(config: Mapping, path: Path) -> None:
    write_json(path, dict(config))


def _paths_in(node: Any, at: str = "") -> str | None:
    """The key path of the first string value that could name a file (a separator, ``..``, a NUL), else None."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            found = _paths_in(value, f"{at}.{key}" if at else str(key))
            if found:
                return found
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found = _paths_in(item, f"{at}[{index}]")
            if found:
                return found
    elif isinstance(node, str) and (any(c in node for c in "/\\\0") or node in (".", "..", "")):
        return at
    return None


def _problem(config: Any, trusted_classes: Iterable[str], origin: str) -> str | None:
    """What makes ``config`` (parsed config.json) unusable, else None; raises for a target outside the registry."""
    if not isinstance(config, dict):
        return f"it holds a JSON {type(config).__name__}, not an object"
    task = config.get("task")
    if not isinstance(task, str) or task not in TASKS:
        return f"task={task!r} is not one of {list(TASKS)}"
    expected = [*KEYS, "diffusion"] if task == "generate" else list(KEYS)
    unknown, missing = sorted(set(config) - {*expected, SHA256_KEY}), [k for k in expected if k not in config]
    if unknown or missing:
        return (f"unknown keys {unknown}" if unknown else "") + ("; " if unknown and missing else "") + \
            (f"missing keys {missing}" if missing else "")
    if (config["format"], config["format_version"]) != (FORMAT, FORMAT_VERSION) or \
            type(config["format_version"]) is not int:  # true == 1 in Python
        return (f"format={config['format']!r} version {config['format_version']!r}; this version of art-diffusion "
                f"reads {FORMAT!r} version {FORMAT_VERSION}")
    found = _paths_in(config)
    if found:
        return (f"the value at '{found}' looks like a path; the folder's files have fixed names and config.json "
                "names none")
    net, diffusion = config["net"], config.get("diffusion")
    if not isinstance(net, dict) or not isinstance(net.get("_target_"), str):
        return "'net' is not an object with a _target_ (the network's class)"
    check_targets({"net": net, "diffusion": diffusion}, origin, trusted_classes)  # raises: nothing is imported
    module = TASKS[task]
    if net["_target_"] not in NETS[module]:
        return f"net._target_={net['_target_']!r} is not a network of a {task} model ({', '.join(NETS[module])})"
    wrong = argument_problems({"net": net, "diffusion": diffusion})  # each class given its own arguments, typed
    if wrong:
        return "; ".join(wrong)
    size, names = config["image_size"], config["class_names"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f"image_size={size!r} is not a positive integer"
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return "class_names is neither null nor a list of strings"
    if config["normalisation"] != NORMALISATION[task] or config["weights"] != WEIGHTS[task]:
        return (f"normalisation/weights of a {task} model must be {NORMALISATION[task]} / {WEIGHTS[task]!r}, "
                f"got {config['normalisation']!r} / {config['weights']!r}")
    if not isinstance(config["art_diffusion_version"], str):
        return "art_diffusion_version is not a string"
    digest = config.get(SHA256_KEY)
    if SHA256_KEY in config and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        return f"{SHA256_KEY}={digest!r} is not a sha256 (64 lowercase hex digits)"
    model: dict[str, Any] = {"_target_": module, "net": net}
    if task == "generate":
        if not isinstance(diffusion, dict) or sorted(diffusion) != sorted(DIFFUSION_KEYS):
            return f"'diffusion' must be an object with exactly the keys {list(DIFFUSION_KEYS)}"
        if not isinstance(diffusion["schedule"], dict) or "_target_" not in diffusion["schedule"]:
            return "diffusion.schedule is not an object with a _target_"
        model |= {**diffusion, "image_size": size}
        classes = diffusion["num_classes"]
        if names is not None and classes and len(names) != classes:
            return f"class_names has {len(names)} names but diffusion.num_classes={classes}"
    check_stored_values({"model": model, "data": {"image_size": size}}, origin, whole=False)  # raises ConfigError
    return None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number of strict JSON")


def read_config(folder: Path, trusted_classes: Iterable[str] = ()) -> dict[str, Any]:
    """``folder/config.json``, checked (see the module's docstring); :class:`PretrainedFolderError` otherwise."""
    path = folder / CONFIG_FILE
    origin = str(path)
    try:  # a config.json of this project is a few kB: a larger one, a named pipe or a device is refused unread
        config = read_json(path, MAX_CONFIG_BYTES, parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PretrainedFolderError(f"Cannot read {path}: {exc}. Export the folder again with "
                                    "`python scripts/export.py ckpt_path=... output_dir=...`.") from None
    check_depth(config, origin)
    problem = _problem(config, trusted_classes, origin)
    if problem:
        raise PretrainedFolderError(f"Refusing {path}: {problem}. Nothing of it was built; {EXPORT_AGAIN}.")
    return config


def _changed(path: Path) -> PretrainedFolderError:
    return PretrainedFolderError(
        f"{path}: its sha256 is not the one {path.parent / CONFIG_FILE} records ({SHA256_KEY}): {DAMAGED_FIX} (if you "
        f"replaced the weights on purpose, remove {SHA256_KEY} from {CONFIG_FILE}).")


def read_net(folder: Path, config: Mapping) -> nn.Module:
    """The network ``config`` describes, with the weights of ``folder/model.safetensors`` (eval mode, CPU), after the
    file matched the sha256 config.json records (when it records one) and its tensors passed the checks of every
    loader of weights (no NaN or infinity, the model's keys, shapes and kinds of dtype)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise PretrainedFolderError(f"{path} is missing: an exported folder holds {CONFIG_FILE} and {WEIGHTS_FILE}.")
    try:
        digest = config.get(SHA256_KEY)
        changed = digest is not None and file_sha256(path) != digest
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedFolderError(f"Cannot read {path}: {exc}. The file is truncated or not safetensors; export "
                                    "the folder again.") from None
    check_tensors(state, path, DAMAGED_FIX)  # first: it names the tensor
    if changed:
        raise _changed(path)
    if digest is None:  # never silently: a flipped bit that makes no NaN would load
        log.warning("%s: %s records no %s, so these weights are not checked against a checksum (damage that makes no "
                    "NaN would go unseen); %s to add one.", path, CONFIG_FILE, SHA256_KEY, EXPORT_AGAIN)
    net = instantiate(config["net"])
    check_state_dict(net, state, path, f"the network config.json describes ({config['net']['_target_']})",
                     DAMAGED_FIX)
    net.load_state_dict(state)
    return net.eval()


def is_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def load_folder(folder: Path, trusted_classes: Iterable[str] = ()) -> tuple[dict[str, Any], nn.Module]:
    """The checked config.json and its network with the folder's weights: JSON and safetensors only."""
    config = read_config(folder, trusted_classes)
    return config, read_net(folder, config)
