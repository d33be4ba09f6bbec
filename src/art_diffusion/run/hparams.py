"""The flat hyperparameters a run reports with its final metrics (TensorBoard's HPARAMS tab, any Lightning logger).

TensorBoard's hparams plugin takes a metric's value from the run's scalar of the same tag, so the HPARAMS summary
names the final metrics without logging them again: every ``val/*`` and ``test/*`` value is in the event files once.
The summary goes to its own event file (``*.hparams``), replaced when a run is resumed, because TensorBoard keeps
the first summary of a tag it reads: a resumed run's row shows its resumed config.
"""

from __future__ import annotations

import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard.writer import FileWriter

from art_diffusion.lightning.loggers import readable_tag
from art_diffusion.run.run_dir import read_overrides
from art_diffusion.run.sweeps.record import read_sweep

Scalar = int | float | str | bool

#: Shown first in the HPARAMS table (the tab shows the first five metrics and the first five hparams by default).
FIRST_METRICS = tuple(map(readable_tag, ("val/psnr", "test/psnr", "best_epoch", "val/ssim", "test/ssim", "val/loss",
                                           "test/loss")))
HPARAMS_SUFFIX = ".hparams"  # the file name suffix of the HPARAMS event file
NOT_HPARAMS = ("resume",)  # command-line keys that say where a run continues, not how it trains


def _scalar(value) -> Scalar:
    # loggers accept only numbers, strings and booleans.
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _command_line(cfg: DictConfig) -> list[str]:
    """The run's command-line overrides; a resumed run's are those it was started with, then the resuming call's."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    started = read_overrides(cfg.resume) if cfg.get("resume") else None
    return [*(started or []), *overrides]


def _override_hparams(cfg: DictConfig) -> dict[str, Scalar]:
    """The run's command-line overrides (a sweep's swept keys among them), read back from the resolved config."""
    params = {}
    for override in _command_line(cfg):
        key, _, text = override.lstrip("+~").partition("=")
        if key in NOT_HPARAMS:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        # a group choice (trainer=cpu) selects a whole node: the choice's name says more than its contents
        params[key] = text if value is None or OmegaConf.is_config(value) else _scalar(value)
    return params


def run_hparams(cfg: DictConfig) -> dict[str, Scalar]:
    """The config keys listed in ``cfg.logged_hparams`` plus every overridden key, as flat ``key: scalar`` pairs.

    ``cfg`` is the config the run trained with (a resumed run's stored config with its allowed overrides)."""
    params = {key: _scalar(OmegaConf.select(cfg, key, default=None)) for key in cfg.get("logged_hparams", [])}
    return params | _override_hparams(cfg)


def _sweep(cfg: DictConfig) -> dict[str, list[str]] | None:
    """The record of the sweep this job (or the resumed job) belongs to (see run/sweeps/record.py); None if none."""
    if cfg.get("resume"):
        return read_sweep(Path(cfg.resume).parent)
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return read_sweep(HydraConfig.get().sweep.dir)


def primary_keys(cfg: DictConfig, params: dict[str, Scalar], sweep: dict[str, list[str]] | None) -> list[str]:
    """The hparams a reader compares first: a sweep's swept keys, else the keys overridden on the command line."""
    keys = sweep["swept"] if sweep is not None else [o.lstrip("+~").partition("=")[0] for o in _command_line(cfg)]
    return [key for key in dict.fromkeys(keys) if key in params]


def _tensorboard_value(value: Scalar, number: bool):
    """(protobuf field, value, data type). TensorBoard prints numbers with 5 digits (16 -> "16.000"), so integers go
    as text, unless ``number``: a swept key whose values are not all integers (0, 0.5, 1) keeps one type, a number."""
    if isinstance(value, bool):
        return "bool_value", value, api_pb2.DATA_TYPE_BOOL
    if isinstance(value, float) or (number and isinstance(value, int)):
        return "number_value", float(value), api_pb2.DATA_TYPE_FLOAT64
    return "string_value", str(value), api_pb2.DATA_TYPE_STRING


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return summary


def hparams_summaries(params: dict[str, Scalar], metric_names: list[str], primary: list[str],
                      sweep: dict[str, list[str]] | None) -> list[summary_pb2.Summary]:
    """The HPARAMS tab's experiment (columns: the ``primary`` keys and FIRST_METRICS first), session start and end."""
    numbers = set(sweep["swept"]) - set(sweep["integer"]) if sweep else set()
    order = [*primary, *sorted(k for k in params if k not in primary)]
    experiment = api_pb2.Experiment(time_created_secs=time.time())
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for key in order:
        field, value, data_type = _tensorboard_value(params[key], key in numbers)
        info = experiment.hparam_infos.add(name=key, type=data_type, differs=key in primary)
        if data_type == api_pb2.DATA_TYPE_BOOL:
            info.domain_discrete.extend([False, True])  # the tab's filter lists both, checked
        setattr(start.hparams[key], field, value)
    metrics = [m for m in FIRST_METRICS if m in metric_names] + sorted(set(metric_names) - set(FIRST_METRICS))
    for name in metrics:
        experiment.metric_infos.add(name=api_pb2.MetricName(tag=name))
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    return [_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
            _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
            _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))]


def write_tensorboard_hparams(log_dir: str | Path, summaries: list[summary_pb2.Summary], step: int) -> None:
    """Write ``summaries`` to ``log_dir``'s HPARAMS event file, replacing the one of an earlier (resumed) session."""
    for old in Path(log_dir).glob(f"*tfevents*{HPARAMS_SUFFIX}"):
        old.unlink()
    writer = FileWriter(str(log_dir), filename_suffix=HPARAMS_SUFFIX)
    for summary in summaries:
        writer.add_summary(summary, step)
    writer.close()


@rank_zero_only
def log_hparams(loggers: list[Logger], cfg: DictConfig, metrics: dict[str, float], step: int) -> None:
    """Report the run's hyperparameters (:func:`run_hparams`) with its final ``metrics``, at its last logged ``step``.

    ``best_epoch`` is logged here (once); the ``val/*`` and ``test/*`` scalars are already in the event files.
    """
    params, sweep = run_hparams(cfg), _sweep(cfg)
    tags = [readable_tag(name) for name in metrics]  # the names the TensorBoard logger gave the scalars
    summaries = hparams_summaries(params, tags, primary_keys(cfg, params, sweep), sweep)
    for logger in loggers:
        if "best_epoch" in metrics:
            logger.log_metrics({"best_epoch": metrics["best_epoch"]}, step=step)
        logger.log_hyperparams(params)  # TensorBoardLogger: only its hparams.yaml (default_hp_metric is off)
        if isinstance(logger, TensorBoardLogger):
            write_tensorboard_hparams(logger.log_dir, summaries, step)
            # Lightning wrote hparams.yaml empty at the start and never replaces it: save() rewrites it now
            (Path(logger.log_dir) / logger.NAME_HPARAMS_FILE).unlink(missing_ok=True)
        logger.save()
