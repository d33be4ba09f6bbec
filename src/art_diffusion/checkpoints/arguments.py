"""The arguments a config gives each class it instantiates are that class's own, of the types its signature declares.

:func:`~art_diffusion.checkpoints.registry.check_targets` decides *which* classes a config may build; this module
checks *what they are given*, for every ``_target_`` node wherever it sits in the tree (a checkpoint's stored config
keeps resolved copies, e.g. ``model.optimizer`` beside ``optim``, and each copy is checked). For each node:

- every key is a parameter of the class (unless it takes ``**kwargs``), and every parameter without a default is
  given (``_partial_`` nodes get the rest when called);
- every value fits the parameter's annotation: ``bool`` only ``true``/``false`` (the string ``"False"`` is not
  false), ``int`` no float, ``list[int]`` a list of integers, ``Literal[...]`` one of its values, a class such as
  ``nn.Module`` only a ``_target_`` node. Annotations this module cannot read (a forward reference, a callable, a
  type variable) are not checked: the value ranges of :mod:`art_diffusion.run.validate` still are.

Why our own: Hydra checks nothing before it calls, so an edited file's ``attention_resolutions: 8`` or an extra
key surfaced as a ``TypeError`` deep inside a constructor (a traceback), and ``fused: "False"`` silently meant
true. Plain Python (no pydantic/typeguard dependency) covers the annotation forms the registry's classes use.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
import os
import types
import typing
from collections.abc import Collection, Mapping
from functools import cache
from pathlib import PurePath
from typing import Any, Literal, Union

from hydra.utils import get_class

_SPECIAL = ("_target_", "_partial_")
_SEQUENCES = (list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection,
              abc.Set)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)


@cache
def _signature(target: str) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool, set[str]]:
    """``(parameters, type hints, takes **kwargs we cannot see, the required ones)`` of the class ``target`` names
    (a registry class, so importable). A class whose ``__init__`` takes ``**kwargs`` passes them to its base (the
    project's pattern: DemoDataModule -> ArtDataModule), so the bases' arguments are its own too, up to a base that
    takes no ``**kwargs``; a chain that ends in ``**kwargs`` (a logger handing them to SummaryWriter) is not
    key-checked. Required are those of the first ``__init__`` that does more than pass ``(*args, **kwargs)`` on
    (a subclass may give its base's required arguments itself)."""
    parameters: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    required: set[str] | None = None
    for klass in get_class(target).__mro__:
        if "__init__" not in klass.__dict__:
            continue
        if klass is object:
            return parameters, hints, True, required or set()
        init = inspect.unwrap(klass.__dict__["__init__"])
        own = list(inspect.signature(init).parameters.values())[1:]  # without self
        try:
            hints = typing.get_type_hints(init) | hints
        except Exception:  # a forward reference only a type checker resolves: keys are still checked, types not
            pass
        named = [p for p in own if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        for p in named:
            parameters.setdefault(p.name, p)
        if required is None and named:
            required = {p.name for p in named if p.default is p.empty}
        if not any(p.kind is p.VAR_KEYWORD for p in own):
            return parameters, hints, False, required or set()
    return parameters, hints, True, required or set()


def conforms(value: Any, hint: Any) -> bool:
    """Whether the plain config value ``value`` can be what the annotation ``hint`` declares."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, (typing.TypeVar, typing.ForwardRef, str)):
        return True
    if origin in (Union, types.UnionType):
        return any(conforms(value, arm) for arm in args)
    if origin is Literal:
        return any(value == option and type(value) is type(option) for option in args)
    if hint is None or hint is type(None):
        return value is None
    if isinstance(value, Mapping) and "_target_" in value:
        return True  # an object the config builds: its own node is checked on its own
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args, strict=True))
        return all(conforms(item, args[0]) for item in value) if args else True
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return isinstance(value, Mapping) and (not args or all(conforms(v, args[-1]) for v in value.values()))
    if isinstance(hint, type):
        if issubclass(hint, (PurePath, os.PathLike)):
            return isinstance(value, str)
        return isinstance(value, hint)  # a class (nn.Module, Tensor, timedelta) is only given as a _target_ node
    return True  # a callable, a NewType, a protocol: not checked here


def _describe(hint: Any) -> str:
    """``int``, ``list[int] | None``; a union of literals as ``one of 64, 32, ...``."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    literals = [v for arm in arms if typing.get_origin(arm) is Literal for v in typing.get_args(arm)]
    if literals and all(typing.get_origin(arm) is Literal or arm is type(None) for arm in arms):
        return "one of " + ", ".join(map(repr, literals)) + (" or None" if type(None) in arms else "")
    text = getattr(hint, "__name__", None) if isinstance(hint, type) else None
    return text or str(hint).replace("typing.", "")


def argument_problems(node: Any, checked: Collection[str] = (), at: str = "") -> list[str]:
    """What is wrong with the arguments of every ``_target_`` node in ``node`` (a plain, resolved config whose
    targets passed :func:`~art_diffusion.checkpoints.registry.check_targets`), each naming its key path. The types of
    the keys in ``checked`` are left to their own rules (``trainer.precision: auto``, which the run resolves before
    the Trainer sees it)."""
    problems: list[str] = []
    stack = [(node, at)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, Mapping):
            if isinstance(value.get("_target_"), str):
                problems += _node_problems(value, where, checked)
            stack += [(child, f"{where}.{key}" if where else str(key)) for key, child in value.items()]
        elif isinstance(value, (list, tuple)):
            stack += [(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return sorted(problems)


def _node_problems(node: Mapping, where: str, checked: Collection[str]) -> list[str]:
    target = node["_target_"]
    parameters, hints, var_keyword, required = _signature(target)
    name = target.rsplit(".", 1)[-1]
    prefix = f"{where}." if where else ""
    problems = []
    for key, value in node.items():
        if key in _SPECIAL:
            continue
        if key not in parameters:
            if not var_keyword:
                problems.append(f"{prefix}{key}: {name} takes no argument {key!r} (it takes "
                                f"{', '.join(parameters) or 'none'})")
            continue
        hint = Any if f"{prefix}{key}" in checked else hints.get(key, Any)
        default = parameters[key].default
        if not (conforms(value, hint) or (value is None and default is None)):
            problems.append(f"{prefix}{key}={value!r} is not a {_describe(hint)}, the type {name} takes")
    if not node.get("_partial_"):
        missing = sorted(key for key in required if key not in node)
        if missing:
            problems.append(f"{where or '<root>'}: {name} needs {missing}, which are not given")
    return problems
