"""What a sweep varies, and job directory names made of it.

When a multirun starts, :class:`SweepRecord` (a Hydra callback, conf/hydra/default.yaml) writes ``sweep.yaml`` to
the sweep dir: the swept keys (command-line sweeps such as ``loss.perceptual_weight=0,0.5`` and the sweeper's search
space, ``hydra.sweeper.params``, e.g. Optuna's) and the fixed overrides shared by every job. Each job's directory is
then named after its swept values only (:func:`job_dirname`, the ``sweep_job_dirname`` resolver), e.g.
``perceptual_weight=0.5``: that name is also the job's run name in ``tensorboard --logdir <sweep dir>``. The job
reads the same file to put its swept keys first in TensorBoard's HPARAMS table, with one type per key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from art_diffusion import UserError
from art_diffusion.storage import atomic_write, read_valid, read_yaml

log = logging.getLogger(__name__)

RECORD_KEYS = ("swept", "integer", "fixed")  # what describe_sweep writes, each a list of names
SWEEP_FILE = "sweep.yaml"  # in the sweep dir: {swept: [keys], integer: [swept keys of whole numbers], fixed: [...]}
MAX_DIRNAME = 200  # bytes; most filesystems allow 255 for one path component


def _parse(overrides: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def _whole_numbers(sweep: Override) -> bool:
    """Whether every value of a sweep is an integer (an interval with integer bounds: Optuna samples integers)."""
    value = sweep.value()
    if isinstance(value, IntervalSweep):
        return isinstance(value.start, int) and isinstance(value.end, int)
    values = list(sweep.sweep_iterator())
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def describe_sweep(task_overrides: list[str], sweeper_params: dict | None) -> dict[str, list[str]]:
    """``{swept: keys, integer: the swept keys whose values are all integers, fixed: overrides every job shares}``,
    from the multirun's command line and the sweeper's ``params`` (a grid in config, or Optuna's search space)."""
    last: dict[str, Override] = {}
    params = [f"{key}={value}" for key, value in (sweeper_params or {}).items()]
    for override in _parse([*params, *task_overrides]):  # the last one of a key wins: the command line over params
        last.pop(override.key_or_group, None)
        last[override.key_or_group] = override
    swept = [key for key, override in last.items() if override.is_sweep_override()]
    return {"swept": swept, "integer": [key for key in swept if _whole_numbers(last[key])],
            "fixed": [override.input_line for override in last.values() if not override.is_sweep_override()]}


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key shortened to its shortest dotted suffix that no other key ends with: ``optim.lr`` -> ``lr``."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        short[key] = suffix
    return short


def job_dirname(swept: list[str] | None, overrides: list[str], num: int) -> str:
    """A sweep job's directory name: its swept ``key=value`` pairs, keys shortened, values exactly as given.

    A sweep that varies nothing, or has no record (``swept`` None: a config composed outside a multirun), names its
    jobs by number, as Hydra does. A name too long for the filesystem drops the keys; the values are never cut.
    """
    # the text as given, not Hydra's re-printed value (which rounds long floats)
    values = {o.key_or_group: o.input_line.partition("=")[2] for o in _parse(overrides) if not o.is_delete()}
    keys = [key for key in swept or [] if key in values]
    if not keys:
        return str(num)
    short = short_keys(keys)
    pairs = [f"{short[key]}={values[key]}".replace("/", "_") for key in keys]
    name = ",".join(pairs)
    if len(name.encode()) > MAX_DIRNAME:
        name = ",".join(values[key].replace("/", "_") for key in keys)
    if len(name.encode()) > MAX_DIRNAME:
        raise UserError(f"The swept values {pairs} do not fit in a directory name ({MAX_DIRNAME} bytes). Sweep "
                        "shorter values, or number the jobs: 'hydra.sweep.subdir=${hydra.job.num}'")
    return name


def read_sweep(sweep_dir: str | Path) -> dict[str, list[str]] | None:
    """The record :func:`describe_sweep` wrote to ``sweep_dir``; None when the sweep has no record, or one that is not
    of that form (unreadable, edited: one warning naming it)."""
    return read_valid(Path(sweep_dir) / SWEEP_FILE, read_yaml, _is_record,
                      f"{{{', '.join(RECORD_KEYS)}: [names]}}")


def _is_record(data) -> bool:
    return (isinstance(data, dict) and set(data) == set(RECORD_KEYS)
            and all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in data.values()))


class SweepRecord(Callback):
    """Hydra callback: writes ``sweep.yaml`` (swept keys, fixed overrides) to the sweep dir when a multirun starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # as typed: an override may hold an interpolation (dirpath=${paths.output_dir}/x) that cannot resolve yet
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        params = config.hydra.sweeper.get("params")
        record = describe_sweep(overrides, OmegaConf.to_container(params, resolve=False) if params else None)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(sweep_dir / SWEEP_FILE, OmegaConf.to_yaml(record))
        log.info("Sweep over %s in %s (fixed overrides in %s)", record["swept"] or "nothing", sweep_dir, SWEEP_FILE)
