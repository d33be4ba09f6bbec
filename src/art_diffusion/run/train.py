"""train(cfg): build everything from the composed Hydra config, fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from art_diffusion.checkpoints import check_checkpoint_fits, load_checkpoint
from art_diffusion.checkpoints.atomic_io import AtomicCheckpointIO
from art_diffusion.checkpoints.loading import peek_checkpoint
from art_diffusion.checkpoints.registry import check_targets
from art_diffusion.checkpoints.resume import (
    AUTO,
    auto_resumed_config,
    find_run_to_resume,
    resumed_config,
    starts_fresh,
    tidy_run_dir,
)
from art_diffusion.lightning.divergence_guard import DivergenceGuard
from art_diffusion.lightning.image_grids import logger_step
from art_diffusion.run.cluster.requeue import checkpoint_before_requeue, cluster_plugins
from art_diffusion.run.config_tree import print_config_tree
from art_diffusion.run.hparams import log_hparams
from art_diffusion.run.memory import apply_cpu_memory
from art_diffusion.run.precision import resolve_trainer_precision
from art_diffusion.run.run_dir import LAST_CHECKPOINT, METRICS_FILE, has_checkpoint
from art_diffusion.run.run_dir_owner import in_multirun, owned, owns_run_dirs, refuse_a_trained_dir
from art_diffusion.run.validate import built, check_arguments, check_values
from art_diffusion.storage import temporaries_under, write_json

log = logging.getLogger(__name__)

# The frozen VGG of the perceptual loss stays in eval mode on purpose; Lightning would warn about it every fit.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return callback.best_model_path
    return None


def _checkpoint_epoch(path: str) -> int:
    return peek_checkpoint(path)["epoch"]  # written by this run


def _checkpoint_logger_step(path: str) -> int:
    """The step Lightning's loggers had reached when ``path`` was saved (see :func:`logger_step`)."""
    checkpoint = peek_checkpoint(path)  # ckpt_path, checked by prepare_config
    loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


class Interrupted(Exception):  # noqa: N818  (not an error: the run stopped on request and can be resumed)
    """The run stopped on SIGTERM or SIGINT (Ctrl-C): during training after its current batch, with ``last.ckpt``
    saved; at any other moment of the job at once. The message says how to continue it."""

    def __init__(self, signal_name: str, exit_code: int, run_dir: str) -> None:
        if has_checkpoint(run_dir):
            message = f"Stopped by {signal_name}. Continue with: python scripts/train.py resume={run_dir}"
        else:
            message = (f"Stopped by {signal_name} before the run saved a checkpoint in {run_dir}: there is nothing to "
                       "resume yet; run the same command again to start it afresh.")
        super().__init__(message)
        self.signal_name, self.exit_code = signal_name, exit_code


class StopSignal(BaseException):  # noqa: N818  (like KeyboardInterrupt: no ``except Exception`` may swallow it)
    """SIGTERM or SIGINT received outside a fit or test (data set up, a checkpoint loaded, metrics written): raised
    at once by :func:`stop_signals`' handler, so every ``finally`` (temporary files, locks) runs on the way out."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name, self.exit_code = signal_name, EXIT_CODES[signal_name]


#: 128 + the signal, as if it had killed the process: the job did not finish.
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
_scopes: list[list[str]] = []  # the signals received by the job in progress (one scope per process)


@contextlib.contextmanager
def stop_signals() -> Iterator[list[str]]:
    """One scope for a whole job, from owning its run dir to writing ``metrics.json``: SIGTERM and Ctrl-C stop it
    cleanly at any moment; yields the list of the signals received.

    During a fit or test Lightning's SIGTERM handler is installed (and calls the one it replaced, this one): the
    stop waits for the end of the current batch and ``last.ckpt`` is saved; Ctrl-C is forwarded to it. At any other
    moment, and for a second signal, :class:`StopSignal` is raised at once. A forked child (a process pool's or a
    DataLoader's worker) that inherited the handler ignores the signal: its parent stops it. Nested scopes share
    the outer one; a SIGTERM handler someone else installed (submitit's) is left alone. Main thread only (Python
    delivers signals there)."""
    if _scopes:
        yield _scopes[-1]
        return
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    owner, forwarding = os.getpid(), False

    def on_signal(signum, frame) -> None:
        nonlocal forwarding
        if os.getpid() != owner or forwarding:  # a forked worker; or Lightning's handler calling this for our SIGINT
            return
        name = signal.Signals(signum).name
        lightning = signal.getsignal(signal.SIGTERM)
        if not received and lightning is not on_signal and callable(lightning):  # in a fit or test
            received.append(name)
            if signum == signal.SIGINT:
                log.warning("Ctrl-C: stopping after the current batch and saving last.ckpt (Ctrl-C again to stop "
                            "at once).")
                forwarding = True
                try:
                    lightning(signal.SIGTERM, frame)
                finally:
                    forwarding = False
            return
        received.append(name)
        raise StopSignal(name)

    signals = [signal.SIGINT]
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signals.append(signal.SIGTERM)
    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    _scopes.append(received)
    try:
        yield received
    finally:
        _scopes.pop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _plain(cfg: DictConfig) -> dict:
    """The run's resolved config as plain data, without Hydra's own node."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}


def _scalars(metrics: dict, prefixes: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(prefixes)}


@contextlib.contextmanager
def own_run_dir(cfg: DictConfig) -> Iterator[None]:
    """The run dir's lock, held by one process (taken when Hydra's run started, see run.run_dir_owner, else here): a
    second ``resume=`` of a live run is refused. A resumed dir is readied once it is owned (:func:`tidy_run_dir`).
    DDP ranks other than the launching one (Lightning's, or SLURM's tasks) are part of the same run and take none."""
    if not owns_run_dirs():
        yield
        return
    resume = cfg.get("resume")
    directory = find_run_to_resume(str(resume)) if resume and resume != AUTO else Path(cfg.paths.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with owned(directory):
        if starts_fresh(resume) and in_multirun():  # a single run's: checked as Hydra's run started (RunDirOwner)
            refuse_a_trained_dir(directory)
        for leftover in temporaries_under(directory):  # a killed earlier process's half-written files
            log.info("Removing %s, left by a write that was interrupted", leftover)
            leftover.unlink(missing_ok=True)
        if resume:
            tidy_run_dir(directory, Path(cfg.ckpt_path))
        yield


def _monitor_train_loss(cfg: DictConfig) -> None:
    """data.val_fraction=0 skips validation: checkpoints that monitor a val/ metric keep the lowest train loss."""
    for name, callback in cfg.get("callbacks", {}).items():
        if callback is not None and str(callback.get("monitor") or "").startswith("val/"):
            log.info("No validation (data.val_fraction=0): callbacks.%s monitors train/loss_epoch instead of %s",
                     name, callback.monitor)
            with open_dict(callback):
                callback.monitor, callback.mode = "train/loss_epoch", "min"


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured module on the configured data; returns the final ``val/*`` and ``test/*`` metrics.

    Also ``best_epoch``, the epoch of the best checkpoint. The metrics are logged with the run's hyperparameters
    (TensorBoard's HPARAMS tab); scripts/train.py returns the one named by ``cfg.optimized_metric`` to sweepers.
    Two steps: :func:`prepare_config`, which writes nothing, then :func:`fit_and_test` while this process owns
    the run dir (see :func:`own_run_dir`).
    """
    with stop_signals():
        cfg = prepare_config(cfg)
        with own_run_dir(cfg):
            return fit_and_test(cfg)


def prepare_config(cfg: DictConfig) -> DictConfig:
    """The config this run trains with, checked before anything is written or built: a resumed run's stored config
    (with the overrides it may take), every value in its range, ``trainer.precision=auto`` resolved for this
    machine, every ``_target_`` in the registry."""
    if cfg.get("resume"):
        cfg = auto_resumed_config(cfg) if cfg.resume == AUTO else resumed_config(cfg)
    elif cfg.get("ckpt_path"):
        load_checkpoint(cfg.ckpt_path)  # a missing or damaged file stops the run before its dir is used
    check_values(cfg, "train")
    resolve_trainer_precision(cfg)  # trainer.precision=auto -> this machine's, stored in the run's config
    origin = f"the config of the resumed run {cfg.resume}" if cfg.get("resume") else "the run config"
    plain = _plain(cfg)
    check_targets(plain, origin, cfg.get("trusted_classes") or ())  # before anything is instantiated
    check_arguments(plain)
    return cfg


def fit_and_test(cfg: DictConfig) -> dict[str, float]:
    """With a prepared ``cfg``, in a run dir this process owns: print the config, build data, model, callbacks,
    loggers and trainer, fit (a resumed run from its checkpoint), test the best checkpoint, write
    ``metrics.json``."""
    if cfg.get("extras", {}).get("print_config", True):  # runs stored before extras existed print it too
        print_config_tree(cfg, cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    log.info(apply_cpu_memory(cfg.get("cpu_memory", "reuse")))  # before the data and the first step allocate

    datamodule: L.LightningDataModule = built("data", cfg.data)
    skipped = datamodule.skipped_stages() if hasattr(datamodule, "skipped_stages") else set()
    if "val" in skipped:
        _monitor_train_loss(cfg)
    module: L.LightningModule = built("model", cfg.model)
    module.run_config = _plain(cfg)  # stored in every checkpoint
    callbacks = [built(f"callbacks.{name}", c) for name, c in cfg.get("callbacks", {}).items() if c is not None]
    # every run: no non-finite loss trains on or is saved
    callbacks.append(DivergenceGuard(divergence_hint(cfg), str(Path(cfg.paths.output_dir) / LAST_CHECKPOINT)))
    loggers = [_logger(f"logger.{name}", c, cfg) for name, c in cfg.get("logger", {}).items() if c is not None]
    # every checkpoint is written atomically in its own directory (see AtomicCheckpointIO); under SLURM, Lightning's
    # SLURM environment without a requeue of its own (see run/cluster/requeue.py)
    plugins = [AtomicCheckpointIO(), *cluster_plugins()]
    trainer: L.Trainer = built("trainer", cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins)

    if cfg.get("ckpt_path"):  # fail before training with the file and the mismatching keys named
        check_checkpoint_fits(module, cfg.ckpt_path)
    with stop_signals() as received:
        try:
            return _fit_and_test(cfg, trainer, module, datamodule, skipped, received)
        except SIGTERMException:  # Lightning's stop after the batch, on the signal this scope received
            name = received[0] if received else "SIGTERM"
            raise Interrupted(name, EXIT_CODES[name], cfg.paths.output_dir) from None
        except SystemExit as stop:  # Lightning's KeyboardInterrupt handling exits with 1
            if received and stop.code == 1:
                raise Interrupted(received[0], EXIT_CODES[received[0]], cfg.paths.output_dir) from None
            raise


def divergence_hint(cfg: DictConfig) -> str:
    """What to change when a run diverges: its learning rate and gradient clipping, with their values."""
    lr, clip = OmegaConf.select(cfg, "optim.lr"), OmegaConf.select(cfg, "trainer.gradient_clip_val")
    lower = f", e.g. optim.lr={lr / 10:g}" if isinstance(lr, (int, float)) else ""
    return (f"Lower the learning rate (optim.lr={lr}{lower}) or clip the gradients (trainer.gradient_clip_val="
            f"{'null, e.g. 1.0' if clip is None else clip}), and start a new run (ckpt_path= can start it from a "
            "good checkpoint).")


def _logger(key: str, logger_cfg: DictConfig, cfg: DictConfig):
    """A logger of the run. A resumed run's TensorBoard logger drops (``purge_step``) what the stopped process
    logged after its checkpoint, so the resumed steps are not shown twice; a run started afresh in a dir where a
    killed attempt logged (``resume=auto`` before any checkpoint) drops all of that."""
    if not str(logger_cfg.get("_target_", "")).endswith("TensorBoardLogger"):
        return built(key, logger_cfg)
    if cfg.get("resume") and cfg.get("ckpt_path"):
        return built(key, logger_cfg, purge_step=_checkpoint_logger_step(cfg.ckpt_path))
    if any(Path(str(logger_cfg.get("save_dir", cfg.paths.output_dir))).glob("events.out.tfevents.*")):
        return built(key, logger_cfg, purge_step=0)
    return built(key, logger_cfg)


def _stop_if_asked(received: list[str], cfg: DictConfig) -> None:
    """A signal Lightning noted but did not stop on (it came after the last batch, or during a test): stop here."""
    if received:
        raise Interrupted(received[0], EXIT_CODES[received[0]], cfg.paths.output_dir)


def _fit_and_test(cfg: DictConfig, trainer: L.Trainer, module: L.LightningModule, datamodule, skipped: set,
                  received: list[str]) -> dict:
    with checkpoint_before_requeue():  # under submitit (SLURM): its requeue signal saves last.ckpt first
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    _stop_if_asked(received, cfg)
    if "val" not in skipped and not _scalars(trainer.callback_metrics, ("val/",)):
        # nothing was left to fit (a finished run resumed): the final val metrics of the weights as they are
        trainer.validate(module, datamodule=datamodule, verbose=False, weights_only=True)
    metrics = _scalars(trainer.callback_metrics, ("val/",))
    best = _best_checkpoint(trainer)
    if best:
        metrics["best_epoch"] = _checkpoint_epoch(best)

    if cfg.get("test") and "test" in skipped:
        log.info("No test: data.test_fraction=0 skips the test stage.")
    elif cfg.get("test"):
        log.info("Testing %s", best or "the final weights (no best checkpoint was saved)")
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        _stop_if_asked(received, cfg)
        metrics |= _scalars(trainer.callback_metrics, ("test/",))
    log_hparams(trainer.loggers, cfg, metrics, step=logger_step(trainer))

    if trainer.is_global_zero:
        path = Path(cfg.paths.output_dir) / METRICS_FILE
        write_json(path, metrics)
        log.info("Metrics written to %s: %s", path, metrics)
    return metrics
