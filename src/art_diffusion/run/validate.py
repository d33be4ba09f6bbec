"""Config values are checked before any work: ``check_values(cfg, "train")`` at the start of train() and of each
tool. Every numeric key a user turns in conf/ has a range; a value outside it (or not a number at all, e.g.
``loss.perceptual_weight=abc``) stops the run with one :class:`ConfigError` naming key, value, range and fix.
Every range is finite: ``inf``, ``-inf``, ``nan`` and ``1e400`` (read as inf) are refused for every key, and sizes
have an upper bound far above any real use, so a value from an edited checkpoint cannot ask for an absurd allocation.

A key a config does not have (``callbacks.samples`` without ``model=ddpm``) is not checked.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from art_diffusion import ConfigError
from art_diffusion.diffusion.prediction import PREDICTIONS
from art_diffusion.diffusion.samplers import SAMPLERS
from art_diffusion.diffusion.schedule import SCHEDULES
from art_diffusion.nets import DOWNSAMPLING_FACTOR
from art_diffusion.run.cluster.ddp import launched_on_every_node
from art_diffusion.run.memory import CHOICES as CPU_MEMORY

_ABSENT = object()
INF = math.inf
PRECISIONS = ("auto", "64-true", "64", "32-true", "32", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "transformer-engine", "transformer-engine-float16", "16", "bf16")


@dataclass(frozen=True)
class Range:
    """``low`` .. ``high`` (open ends where ``*_open``); ``integer`` demands an int; ``null`` admits None."""

    low: float = -INF
    high: float = INF
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    null: bool = False

    def __post_init__(self) -> None:
        if self.integer and self.high == INF:  # a count from an edited file must not ask for an absurd allocation
            raise ValueError(f"an integer Range needs a finite upper bound (low={self.low})")

    def describe(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        if self.high == INF:
            text = f"{what} {'>' if self.low_open else '≥'} {self.low:g}" if self.low > -INF else what
        else:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            shown = int if self.integer else lambda bound: f"{bound:g}"
            low, high = shown(self.low), shown(self.high)
            text = f"{what} in {left}{low}, {high}{right}"
        return text + (" or null" if self.null else "")

    def admits(self, value) -> bool:
        if value is None:
            return self.null
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


#: Upper bounds of sizes (far above any real use; they stop absurd allocations from an edited stored config).
MAX_SIDE, MAX_WIDTH, MAX_COUNT = 4096, 4096, 10**6
KEEP = Range(-1, MAX_COUNT, integer=True)          # save_top_k: -1 keeps every checkpoint
PATIENCE = Range(0, MAX_COUNT, integer=True)
TILE = 16 * MAX_SIDE                               # reconstruct's tiles (a native image may be far larger than a side)
POSITIVE_INT = Range(1, MAX_COUNT, integer=True)   # epochs, intervals, steps between things
SEED = Range(0, 2**32 - 1, integer=True)           # what seed_everything and numpy take
SIDE = Range(1, MAX_SIDE, integer=True)
WIDTH = Range(1, MAX_WIDTH, integer=True)
COUNT = Range(1, MAX_COUNT, integer=True)
BATCH = Range(1, 65536, integer=True)
GRID = Range(1, 1024, integer=True)        # images in a logged grid
STEPS = Range(1, 100_000, integer=True)    # sampler steps
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1, high_open=True)  # [0, 1)
PROBABILITY = Range(0, 1)
ANY_INT = Range(-(2**63), 2**63 - 1, integer=True)

#: Numeric keys whose rule is in :func:`_train_relations` (not a plain range).
CHECKED_BY_RELATIONS = ("trainer.devices",)
#: key -> (allowed range, the fix). One table per entry config; keys a config lacks are skipped.
TRAIN_RULES: dict[str, tuple[Range, str]] = {
    "seed": (Range(0, 2**32 - 1, integer=True, null=True), "e.g. seed=42"),
    "data.seed": (SEED, "the split needs a seed even when seed=null: e.g. data.seed=42"),
    "data.image_size": (Range(DOWNSAMPLING_FACTOR, MAX_SIDE, integer=True),
                        f"a multiple of the net's downsampling factor {DOWNSAMPLING_FACTOR}, e.g. data.image_size=64"),
    "data.batch_size": (BATCH, "e.g. data.batch_size=32"),
    "data.num_workers": (Range(0, 256, integer=True, null=True), "0 decodes in the main process; null = one per core"),
    "data.val_fraction": (FRACTION, "0 skips validation; e.g. data.val_fraction=0.1"),
    "data.test_fraction": (FRACTION, "0 skips the final test; e.g. data.test_fraction=0.1"),
    "data.max_pixels": (Range(1, 2**40, integer=True), "e.g. data.max_pixels=50000000"),
    "data.min_size": (SIDE, "e.g. data.min_size=32"),
    "data.max_bad_fraction": (PROBABILITY, "e.g. data.max_bad_fraction=0.5"),
    "data.images_per_class": (COUNT, "e.g. data.images_per_class=48"),
    "data.source_size": (Range(16, MAX_SIDE, integer=True), "e.g. data.source_size=128"),
    "loss.mse_weight": (NON_NEGATIVE, "e.g. loss.mse_weight=1"),
    "loss.perceptual_weight": (NON_NEGATIVE, "0 turns the VGG term off; e.g. loss.perceptual_weight=1"),
    "loss.vgg_layers": (Range(1, 31, integer=True), "VGG16 has 31 feature layers; 16 = through relu3_3"),
    "optim.lr": (POSITIVE, "e.g. optim.lr=1e-3"),
    "optim.weight_decay": (NON_NEGATIVE, "0 = no weight decay"),
    "scheduler.step_size": (POSITIVE_INT, "epochs between learning-rate drops, e.g. scheduler.step_size=30"),
    "scheduler.gamma": (POSITIVE, "the factor of each drop, e.g. scheduler.gamma=0.1"),
    "trainer.max_epochs": (POSITIVE_INT, "e.g. trainer.max_epochs=10"),
    "trainer.num_nodes": (Range(1, 1024, integer=True), "e.g. trainer.num_nodes=1"),
    "trainer.check_val_every_n_epoch": (POSITIVE_INT, "e.g. trainer.check_val_every_n_epoch=1"),
    "trainer.log_every_n_steps": (POSITIVE_INT, "e.g. trainer.log_every_n_steps=10"),
    "trainer.accumulate_grad_batches": (POSITIVE_INT, "e.g. trainer.accumulate_grad_batches=1"),
    "trainer.gradient_clip_val": (Range(0, null=True), "null = no clipping; e.g. trainer.gradient_clip_val=1.0"),
    "model.net.in_channels": (Range(3, 3, integer=True), "images are decoded to RGB: 3"),
    "model.net.base_channels": (WIDTH, "e.g. model.net.base_channels=64"),
    "model.net.emb_dim": (WIDTH, "e.g. model.net.emb_dim=128"),
    "model.schedule.timesteps": (Range(2, 100_000, integer=True), "e.g. model.schedule.timesteps=1000"),
    "model.ema_decay": (FRACTION, "0 = no averaging; e.g. model.ema_decay=0.999"),
    "model.num_classes": (Range(1, MAX_COUNT, integer=True, null=True), "null = unconditional, else the class count"),
    "model.cond_drop_prob": (FRACTION, "e.g. model.cond_drop_prob=0.1"),
    "model.eval_seed": (SEED, "e.g. model.eval_seed=0"),
    "callbacks.best_checkpoint.save_top_k": (KEEP, "-1 keeps every checkpoint, 0 none"),
    "callbacks.last_checkpoint.save_top_k": (Range(0, 1, integer=True), "1 keeps last.ckpt, 0 writes none"),
    "callbacks.last_checkpoint.every_n_epochs": (POSITIVE_INT, "e.g. callbacks.last_checkpoint.every_n_epochs=1"),
    "callbacks.periodic_checkpoint.save_top_k": (KEEP, "-1 keeps every checkpoint, 0 none"),
    "callbacks.periodic_checkpoint.every_n_epochs": (POSITIVE_INT, "e.g. ...periodic_checkpoint.every_n_epochs=10"),
    "callbacks.reconstructions.every_n_epochs": (POSITIVE_INT, "e.g. callbacks.reconstructions.every_n_epochs=1"),
    "callbacks.reconstructions.num_images": (GRID, "e.g. callbacks.reconstructions.num_images=8"),
    "callbacks.reconstructions.logged_size": (Range(0, MAX_SIDE, integer=True), "px per logged image; 0 = native size"),
    "callbacks.samples.logged_size": (Range(0, MAX_SIDE, integer=True), "px per logged image; 0 = native size"),
    "callbacks.early_stopping.patience": (PATIENCE, "e.g. callbacks.early_stopping.patience=10"),
    "callbacks.early_stopping.min_delta": (NON_NEGATIVE, "e.g. callbacks.early_stopping.min_delta=0"),
    "callbacks.samples.every_n_epochs": (POSITIVE_INT, "e.g. callbacks.samples.every_n_epochs=1"),
    "callbacks.samples.num_images": (GRID, "e.g. callbacks.samples.num_images=16"),
    "callbacks.samples.steps": (STEPS, "DDIM steps per grid, at most model.schedule.timesteps"),
    "callbacks.samples.seed": (SEED, "e.g. callbacks.samples.seed=0"),
    "callbacks.samples.guidance_scale": (NON_NEGATIVE, "1 = no guidance; e.g. callbacks.samples.guidance_scale=3"),
    "callbacks.samples.max_classes": (Range(1, MAX_COUNT, integer=True, null=True),
                                      "class grids per epoch, rotating; null = every class every epoch"),
    "callbacks.generation_scores.every_n_epochs": (Range(0, MAX_COUNT, integer=True, null=True), "0 = off, e.g. 10"),
    "callbacks.generation_scores.num_images": (Range(2, MAX_COUNT, integer=True), "e.g. 128"),
    "callbacks.generation_scores.steps": (STEPS, "e.g. callbacks.generation_scores.steps=20"),
    "callbacks.generation_scores.seed": (SEED, "e.g. callbacks.generation_scores.seed=0"),
    "callbacks.generation_scores.batch_size": (BATCH, "e.g. callbacks.generation_scores.batch_size=64"),
    "callbacks.generation_scores.layer": (Range(0, 30, integer=True), "a VGG16 features index: 29 relu5_3"),
    "callbacks.generation_scores.input_size": (Range(32, MAX_SIDE, integer=True), "the VGG's input side, e.g. 224"),
    "loss.min_snr_gamma": (Range(0, low_open=True, null=True), "null = off; e.g. loss.min_snr_gamma=5"),
    "model.net.num_res_blocks": (Range(1, 64, integer=True), "e.g. model.net.num_res_blocks=2"),
    "model.net.dropout": (Range(0, 1, high_open=True), "e.g. model.net.dropout=0.1"),
    "model.net.image_size": (SIDE, "the generated images' side: ${model.image_size}"),
}
_SAMPLING = {
    "steps": (STEPS, "e.g. steps=50"),
    "eta": (PROBABILITY, "0 = deterministic DDIM, 1 = as noisy as DDPM"),
    "guidance_scale": (NON_NEGATIVE, "1 = no guidance, e.g. guidance_scale=3"),
}
TOOL_RULES: dict[str, dict[str, tuple[Range, str]]] = {
    "train": TRAIN_RULES,
    "reconstruct": {"batch_size": (BATCH, "e.g. batch_size=16"),
                    "gap": (Range(0, MAX_SIDE, integer=True), "e.g. gap=4"),
                    "tile_size": (Range(4 * DOWNSAMPLING_FACTOR, TILE, integer=True, null=True),
                                  f"a multiple of {DOWNSAMPLING_FACTOR}, e.g. tile_size=1024; null = no tiling"),
                    "tile_overlap": (Range(0, TILE, integer=True),
                                     f"a multiple of {DOWNSAMPLING_FACTOR} below tile_size, e.g. tile_overlap=128")},
    "generate": {"num_images": (COUNT, "e.g. num_images=16"), "batch_size": (BATCH, "e.g. batch_size=16"),
                 "seed": (SEED, "e.g. seed=0"), **_SAMPLING},
    "evaluate": {"data.batch_size": (BATCH, "e.g. data.batch_size=16"),
                 "data.num_workers": (Range(0, 256, integer=True), "0 decodes in this process"),
                 "generative.num_images": (Range(2, MAX_COUNT, integer=True), "FD-VGG needs 2 or more, e.g. 256"),
                 "generative.steps": (STEPS, "e.g. generative.steps=50"),
                 "generative.seed": (SEED, "e.g. generative.seed=0"),
                 "generative.batch_size": (BATCH, "e.g. generative.batch_size=64")},
    "fd_vgg": {"image_size": (SIDE, "the generator's data.image_size, e.g. image_size=64"),
               "input_size": (Range(32, MAX_SIDE, integer=True), "the VGG's input side, e.g. input_size=224"),
               "layer": (Range(0, 30, integer=True), "a VGG16 features index: 29 relu5_3, 22 relu4_3"),
               "max_images": (Range(2, MAX_COUNT, integer=True, null=True), "null = every image"),
               "batch_size": (BATCH, "e.g. batch_size=32")},
    "export": {"card_samples": (Range(0, 1024, integer=True), "0 = no samples.png in the card, e.g. card_samples=16")},
}
BOOL = (True, False)
#: key -> its allowed values, compared with their types: true is not "True" (a string is truthy, so an edited file's
#: ``fused: "False"`` would mean true).
CHOICES: dict[str, dict[str, tuple]] = {
    "train": {"test": BOOL, "extras.print_config": BOOL,
              "trainer.precision": PRECISIONS, "model.schedule.kind": SCHEDULES,
              "data.cache": ("auto", True, False), "cpu_memory": CPU_MEMORY,
              "data.feature_store": ("auto", True, False), "model.net.fused": (True, False),
              "model.prediction": PREDICTIONS,
              "callbacks.samples.sampler": SAMPLERS, "callbacks.generation_scores.sampler": SAMPLERS},
    "reconstruct": {"size": ("train", "native"), "pad_mode": ("reflect", "replicate", "constant"),
                    "side_by_side": BOOL},
    "generate": {"sampler": SAMPLERS, "use_ema": BOOL, "progress": BOOL},
    "evaluate": {"generative.sampler": SAMPLERS, "lpips.enabled": BOOL},
    "fd_vgg": {},
    "export": {"format": ("safetensors", "onnx")},
}


#: Keys the project's configs set to a copy of another (``model.optimizer: ${optim}``). A stored config is resolved,
#: so each copy is a value of its own that an edited file may change alone: every rule of a key applies to its copies
#: too (:func:`_with_copies`). tests/test_configs.py checks this list against every ``${...}`` under conf/.
COPIES = {"model.loss": "loss", "model.optimizer": "optim", "model.scheduler": "scheduler",
          "model.image_size": "data.image_size", "model.net.image_size": "model.image_size",
          "model.net.num_classes": "model.num_classes", "data.seed": "seed",
          "callbacks.samples.logged_size": "callbacks.reconstructions.logged_size"}


def _with_copies(rules: dict) -> dict:
    """``rules`` plus, for each key under a :data:`COPIES` original, the same rule for the copy's key (a copy of a
    copy too: model.net.image_size -> model.image_size -> data.image_size)."""
    extended, new = dict(rules), dict(rules)
    while new:
        new = {copy + key[len(original):]: rule for copy, original in COPIES.items() for key, rule in new.items()
               if (key == original or key.startswith(original + ".")) and copy + key[len(original):] not in extended}
        extended |= new
    return extended


#: The networks of each LightningModule: a network of another model has another call signature.
NETS = {
    "art_diffusion.lightning.ReconstructionModule": {"art_diffusion.nets.ConvDiffusionModel": "conv_diffusion"},
    "art_diffusion.lightning.DiffusionModule": {"art_diffusion.nets.UNet": "unet",
                                                 "art_diffusion.nets.ConvDenoiser": "conv_denoiser",
                                                 "art_diffusion.nets.DiffusersUNet": "diffusers_unet"},
}


#: The losses of each LightningModule: a diffusion model's objective is not a reconstruction's.
LOSSES = {
    "art_diffusion.lightning.ReconstructionModule": {"art_diffusion.losses.HybridLoss": "hybrid"},
    "art_diffusion.lightning.DiffusionModule": {"art_diffusion.losses.DiffusionLoss": "diffusion"},
}


def _select(cfg: DictConfig, key: str):
    """``key``'s value; ``_ABSENT`` when the config lacks it or it does not resolve (:func:`_unresolved` says so)."""
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT)
    except OmegaConfBaseException:  # an interpolation that does not resolve, or a list where a section goes
        return _ABSENT


def _unresolved(cfg: DictConfig, keys) -> list[str]:
    """The keys among ``keys`` whose value is an interpolation that does not resolve (e.g. a network of another
    model asks for ``${model.num_classes}``)."""
    problems = []
    for key in keys:
        try:
            OmegaConf.select(cfg, key, default=_ABSENT)
        except InterpolationResolutionError as error:
            problems.append(f"{key} cannot be resolved ({str(error).splitlines()[0]})")
    return problems


def _problems(cfg: DictConfig, tool: str) -> list[str]:
    problems = _unresolved(cfg, [*TOOL_RULES[tool], *CHOICES[tool]])
    for key, (allowed, fix) in _with_copies(TOOL_RULES[tool]).items():
        value = _select(cfg, key)
        if value is not _ABSENT and not allowed.admits(value):
            problems.append(f"{key}={value!r} must be {allowed.describe()} ({fix})")
    for key, options in _with_copies(CHOICES[tool]).items():
        value = _select(cfg, key)
        if value is not _ABSENT and not any(value == o and type(value) is type(o) for o in options):
            problems.append(f"{key}={value!r} must be one of {', '.join(map(str, options))}")
    if tool == "reconstruct" and not problems:
        problems += _tile_relations(cfg)
    if tool == "train":
        problems = _net_fits(cfg) + problems  # first: a network of another model is why its keys do not resolve
        if not problems:
            problems += _model_relations(cfg) + _data_relations(cfg) + _run_relations(cfg)
    return problems


def _net_fits(cfg: DictConfig) -> list[str]:
    """The network and the loss are the model's own (see :data:`NETS`, :data:`LOSSES`)."""
    module, net = _select(cfg, "model._target_"), _select(cfg, "model.net._target_")
    problems = []
    ours = {target: option for nets in NETS.values() for target, option in nets.items()}
    if module in NETS and net in ours and net not in NETS[module]:
        fits = " or ".join(f"model/net={option}" for option in NETS[module].values())
        problems.append(f"model/net={ours[net]} is a network of another model than {module.rsplit('.', 1)[-1]}: "
                        f"choose {fits}")
    loss = _select(cfg, "model.loss._target_")
    losses = {target: option for options in LOSSES.values() for target, option in options.items()}
    if module in LOSSES and loss in losses and loss not in LOSSES[module]:
        fits = " or ".join(f"loss={option}" for option in LOSSES[module].values())
        problems.append(f"loss={losses[loss]} is the loss of another model than {module.rsplit('.', 1)[-1]}: "
                        f"choose {fits} (or leave loss= out: the model picks its own)")
    return problems


def _model_relations(cfg: DictConfig) -> list[str]:
    """The sizes and class counts the network and the model share; sampler steps against the schedule."""
    problems = []
    side, mults = _select(cfg, "model.net.image_size"), _select(cfg, "model.net.channel_mults")
    if mults is not _ABSENT and not (OmegaConf.is_list(mults) and 1 <= len(mults) <= 8
                                     and all(Range(1, 16, integer=True).admits(m) for m in mults)):
        return [f"model.net.channel_mults={mults!r} must be a list of 1 to 8 integers in [1, 16] (e.g. "
                "model.net.channel_mults=[1,2,2])"]
    if isinstance(side, int) and mults is not _ABSENT and (not mults or side % 2 ** (len(mults) - 1)):
        problems.append(f"model.net.image_size={side} must be divisible by 2**(levels - 1) = "
                        f"{2 ** max(len(mults) - 1, 0)} with model.net.channel_mults={list(mults)} (the UNet halves "
                        "the resolution between levels), e.g. data.image_size=32 with 3 levels")
    for key, other, why in (("model.net.num_classes", "model.num_classes", "the net embeds the module's labels"),
                            ("model.image_size", "data.image_size", "a DDPM generates at the size it trains on"),
                            ("model.net.image_size", "model.image_size", "the net places attention by the size")):
        mine, theirs = _select(cfg, key), _select(cfg, other)
        if _ABSENT not in (mine, theirs) and mine != theirs:
            problems.append(f"{key}={mine} must equal {other}={theirs} ({why})")
    timesteps = _select(cfg, "model.schedule.timesteps")
    for key in ("callbacks.samples", "callbacks.generation_scores"):
        steps, sampler = _select(cfg, f"{key}.steps"), _select(cfg, f"{key}.sampler")
        off = key.endswith("generation_scores") and not _select(cfg, f"{key}.every_n_epochs")
        if _ABSENT not in (steps, timesteps) and not off:
            problems += filter(None, [_steps_problem(f"{key}.steps", steps, sampler, timesteps)])
    return problems


def _data_relations(cfg: DictConfig) -> list[str]:
    """The image size against the network, the split fractions."""
    problems = []
    size = _select(cfg, "data.image_size")
    if size is not _ABSENT and size % DOWNSAMPLING_FACTOR:
        near = max(DOWNSAMPLING_FACTOR, round(size / DOWNSAMPLING_FACTOR) * DOWNSAMPLING_FACTOR)
        problems.append(f"data.image_size={size} must be a multiple of {DOWNSAMPLING_FACTOR} (the network halves "
                        f"the resolution 3 times), e.g. data.image_size={near}")
    val, test = _select(cfg, "data.val_fraction"), _select(cfg, "data.test_fraction")
    if _select(cfg, "data.val_root") not in (None, _ABSENT):
        val = 0.0  # a separate validation folder: val_fraction is ignored
    if val is not _ABSENT and test is not _ABSENT and val + test >= 1:
        problems.append(f"data.val_fraction={val} + data.test_fraction={test} = {val + test:g} leaves nothing to "
                        "train on: their sum must be < 1 (e.g. 0.1 and 0.1)")
    if _select(cfg, "data.feature_store") is True:  # auto turns itself off (logged) where the store cannot be used
        if _select(cfg, "data.cache") is False:
            problems.append("data.feature_store=true needs the pixel cache it is computed from, but data.cache=false: "
                            "set data.cache=auto (or true), or data.feature_store=auto")
        if _select(cfg, "data.hflip") is True:
            problems.append("data.feature_store=true stores the unflipped images' features, but data.hflip=true "
                            "flips them at random: set data.feature_store=auto (off with flips) or data.hflip=false")
    return problems


def _tile_relations(cfg: DictConfig) -> list[str]:
    """size=native tiles: sides on the network's grid, and an overlap that leaves each tile a step forward."""
    tile, overlap = _select(cfg, "tile_size"), _select(cfg, "tile_overlap")
    if tile in (None, _ABSENT) or overlap is _ABSENT:
        return []
    f = DOWNSAMPLING_FACTOR
    if tile % f or overlap % f:
        return [f"tile_size={tile} and tile_overlap={overlap} must be multiples of {f} (tiles must sit on the "
                f"network's /{f} grid to match the untiled result), e.g. tile_size=1024 tile_overlap=128"]
    if overlap >= tile:
        return [f"tile_overlap={overlap} must be smaller than tile_size={tile}, e.g. tile_overlap={tile // 8 // f * f}"]
    return []


def _has_accelerator(accelerator) -> bool:
    """Whether ``trainer.accelerator`` gives ``trainer.devices=-1`` (every device) something to count: Lightning's
    CPU accelerator refuses -1 with a TypeError."""
    if str(accelerator) == "cpu":
        return False
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available()) or str(accelerator) not in ("auto", "gpu",
                                                                                                      "cuda", "mps")


def logged_metrics(cfg: DictConfig) -> set[str] | None:
    """The names the run's LightningModule (one of ours) and its callbacks will log: each stage's loss parts (train
    with Lightning's _step/_epoch names), the module's ``EVAL_METRICS`` for val and test, the generation scores when
    on. None for a module that is not ours (nothing is known)."""
    from art_diffusion import lightning  # lazy, like the resolvers: only our own classes are looked up

    target = str(_select(cfg, "model._target_"))
    module = getattr(lightning, target.removeprefix("art_diffusion.lightning."), None) \
        if target.startswith("art_diffusion.lightning.") else None
    if module is None or not hasattr(module, "EVAL_METRICS"):
        return None
    perceptual = _select(cfg, "model.loss.perceptual_weight")
    parts = ["loss", "mse", *(["perceptual"] if isinstance(perceptual, (int, float)) and perceptual > 0 else [])]
    names = {f"train/{part}{when}" for part in parts for when in ("", "_step", "_epoch")}
    names |= {f"{stage}/{name}" for stage in ("val", "test") for name in (*parts, *module.EVAL_METRICS)}
    every = _select(cfg, "callbacks.generation_scores.every_n_epochs")
    if isinstance(every, int) and not isinstance(every, bool) and every > 0:
        names |= {"val/fd_vgg", "val/kid"}
    return names


def _run_relations(cfg: DictConfig) -> list[str]:
    """The loss weights together, the device count, the metric a run returns."""
    problems = []
    mse, perceptual = _select(cfg, "loss.mse_weight"), _select(cfg, "loss.perceptual_weight")
    if mse == 0 and perceptual == 0:
        problems.append("loss.mse_weight=0 and loss.perceptual_weight=0: the loss would be 0 and nothing would be "
                        "learnt; set at least one > 0 (e.g. loss.mse_weight=1)")
    devices = _select(cfg, "trainer.devices")
    if isinstance(devices, int) and not isinstance(devices, bool) and (devices == 0 or devices < -1):
        problems.append(f"trainer.devices={devices} must be a count ≥ 1, -1 (every device), 'auto' or a list of "
                        "device indices (e.g. trainer.devices=1)")
    elif devices == -1 and not _has_accelerator(_select(cfg, "trainer.accelerator")):
        problems.append(f"trainer.devices=-1 means every GPU, and trainer.accelerator="
                        f"{_select(cfg, 'trainer.accelerator')} has none here (a CPU run): use trainer.devices=1, or "
                        "trainer=ddp_cpu trainer.devices=N for N processes on this machine")
    if isinstance(devices, int) and devices > 1024:
        problems.append(f"trainer.devices={devices} must be at most 1024 (the devices of one node)")
    nodes = _select(cfg, "trainer.num_nodes")
    if isinstance(nodes, int) and nodes > 1 and not launched_on_every_node():
        problems.append(f"trainer.num_nodes={nodes} but this process was not started on a cluster (SLURM, torchrun, "
                        "or NODE_RANK and MASTER_ADDR set on each node): it would wait forever for the other nodes. "
                        "Launch with hydra/launcher=slurm (docs/clusters.md) or torchrun, or use trainer.num_nodes=1")
    precision, accelerator = str(_select(cfg, "trainer.precision")), str(_select(cfg, "trainer.accelerator"))
    if precision in ("16-mixed", "16-true", "16") and (accelerator == "cpu" or not _has_accelerator(accelerator)):
        problems.append(f"trainer.precision={precision} is float16, which needs a GPU; this run is on the CPU: use "
                        "trainer.precision=bf16-mixed (or auto, or 32-true)")
    metric, logged = _select(cfg, "optimized_metric"), logged_metrics(cfg)
    if metric not in (None, _ABSENT, "best_epoch") and not str(metric).startswith(("val/", "test/")):
        problems.append(f"optimized_metric={metric!r} must be a final metric: val/<name>, test/<name> or best_epoch "
                        "(e.g. optimized_metric=val/loss)")
    elif logged and metric not in (None, _ABSENT, "best_epoch") and metric not in logged:
        problems.append(f"optimized_metric={metric!r} is not a metric this run logs: choose one of "
                        f"{sorted(m for m in logged if not m.startswith('train/'))} or best_epoch")
    callbacks = _select(cfg, "callbacks")
    for name in (callbacks if OmegaConf.is_dict(callbacks) else {}):
        monitor = _select(cfg, f"callbacks.{name}.monitor")
        # Lightning offers a checkpoint "epoch" and "step" too; LearningRateMonitor logs lr-<optimizer>
        if logged and isinstance(monitor, str) and monitor not in logged | {"epoch", "step"} and \
                not monitor.startswith("lr-"):
            problems.append(f"callbacks.{name}.monitor={monitor!r} is not a metric this run logs (it would stop the "
                            f"run at the first check): choose one of {sorted(logged)}")
    return problems


def _steps_problem(key: str, steps: int, sampler, timesteps: int) -> str | None:
    """Sampler steps against the schedule (``ddpm`` walks every timestep and ignores ``steps``)."""
    if sampler != "ddpm" and steps > timesteps:
        example = min(20, timesteps)
        return f"{key}={steps} must be at most model.schedule.timesteps={timesteps} (e.g. {key}={example})"
    return None


def _raise(problems: list[str]) -> None:
    if len(problems) == 1:
        raise ConfigError(f"Invalid config value: {problems[0]}.")
    if problems:
        raise ConfigError("Invalid config values:\n" + "\n".join(f"  - {p}" for p in problems))


def check_values(cfg: DictConfig, tool: str = "train") -> None:
    """Raise one :class:`ConfigError` listing every value of ``cfg`` outside its range (``tool``: which entry
    config: train, reconstruct, generate, evaluate, fd_vgg, export)."""
    _raise(_problems(cfg, tool))
    if tool == "train":
        _check_paths(cfg)


def check_call(tool: str, values: dict) -> None:
    """The arguments of a Python call (``load_pretrained``'s models) by the rules of the script it stands for: one
    :class:`ConfigError` (a ``ValueError``) naming each value the command line would refuse."""
    try:
        cfg = OmegaConf.create(values)
    except Exception as exc:  # a value OmegaConf cannot hold (a numpy scalar, an object): not one of ours
        raise ConfigError(f"Invalid argument: {exc}".splitlines()[0]) from None
    _raise(_problems(cfg, tool))


#: The sections of a run config, and those a stored one must have to rebuild its model.
SECTIONS, REQUIRED_SECTIONS = ("model", "data", "loss", "optim", "scheduler", "trainer", "callbacks", "paths"), \
    ("model", "data")


#: Keys whose values have rules of their own here: :func:`check_arguments` leaves their types to those.
_RULED = frozenset(_with_copies(TRAIN_RULES)) | frozenset(_with_copies(CHOICES["train"]))


def check_stored_values(config: dict, origin: str, whole: bool = True) -> None:
    """A stored run config (a checkpoint's, whose ``_target_`` classes passed the registry) is shaped like a run
    config, every class in it is given its own arguments of their types
    (:func:`art_diffusion.checkpoints.arguments.argument_problems`) and its values are ones training would accept:
    else one :class:`ConfigError` naming ``origin``. Its data folders are not checked: a model is used where its
    data may not be. ``whole=False``: a model config without its training parts (an exported folder's, whose
    caller checks the arguments of what it builds)."""
    from art_diffusion.checkpoints.arguments import argument_problems

    shape = [f"{key} is a {type(config.get(key)).__name__}, not a section" for key in SECTIONS
             if key in config and not isinstance(config[key], dict)]
    shape += [f"it has no {key} section" for key in REQUIRED_SECTIONS if key not in config]
    if not shape and not isinstance(config["data"].get("image_size"), int):
        shape.append(f"data.image_size={config['data'].get('image_size')!r} is not an integer")
    # what rebuilds the model: the run's other settings (callbacks, trainer) are checked again by a resume
    problems = shape or (argument_problems(config, _RULED) if whole else []) + [
        p for p in _problems(OmegaConf.create(config), "train") if p.startswith(("model", "loss.", "data.image_size"))]
    problems = problems or _size_problems(config["model"].get("net") if isinstance(config["model"], dict) else None)
    if problems:
        raise ConfigError(f"Refusing {origin}: " + "; ".join(problems) + ". Training refuses these values: the "
                          "file was edited, or written by a version with other rules; use another checkpoint.")


def check_arguments(plain: dict) -> None:
    """Every class a composed config instantiates is given its own arguments, of their types (after the registry
    check: this imports the classes): else one :class:`ConfigError` listing each."""
    from art_diffusion.checkpoints.arguments import argument_problems

    _raise(argument_problems(plain, _RULED))
    _raise(_size_problems((plain.get("model") or {}).get("net")))


#: The most parameters a network may have (a few hundred times the project's largest preset): sizes in range one by
#: one (base_channels, channel_mults, num_res_blocks) can multiply into a network no machine holds.
MAX_PARAMETERS = 2 * 10**9


def _size_problems(net) -> list[str]:
    """The network ``net`` (a checked config node) built on the meta device, which allocates nothing: more than
    :data:`MAX_PARAMETERS` parameters is refused before anything allocates them."""
    if not (isinstance(net, dict) and isinstance(net.get("_target_"), str)):
        return []
    import torch
    from hydra.utils import instantiate

    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in instantiate(net).parameters())
    except Exception:  # a constructor refusing its arguments: the build reports it, naming the node (built())
        return []
    if count <= MAX_PARAMETERS:
        return []
    return [f"model.net would have {count:,} parameters ({count * 4 / 2**30:,.0f} GiB in fp32), more than "
            f"{MAX_PARAMETERS:,}: lower model.net.base_channels, channel_mults or num_res_blocks"]


def _check_paths(cfg: DictConfig) -> None:
    """The files and folders a training run reads exist on this machine: the VGG weights file, data.root and
    data.val_root (the demo's root is generated, so it may not exist yet). Every folder it writes to (a key named in
    ``checkpoints.resume.WRITE_KEYS``: dirpath, save_dir, report_dir, ...) is a directory, or can be made as one: no
    file in its place or above it, and its nearest existing parent writable."""
    from art_diffusion.checkpoints.resume import WRITE_KEYS
    from art_diffusion.data.folders import check_image_folder

    def write_keys(node, prefix: str):
        for key, value in node.items() if isinstance(node, dict) else ():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and dotted != "hydra":
                yield from write_keys(value, dotted + ".")
            elif key in WRITE_KEYS and key != "tracking_uri":  # an MLflow store is a URI, its database a file
                yield dotted

    for key in write_keys(OmegaConf.to_container(cfg, resolve=False), ""):
        value = _select(cfg, key)
        if not isinstance(value, str) or "://" in value:
            continue
        path = Path(value).expanduser()
        parent = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))
        if parent == path and not path.is_dir():
            problem = "is a file, not a directory"
        elif not parent.is_dir():
            problem = f"cannot be made: {parent} is a file, not a directory"
        elif not os.access(parent, os.W_OK | os.X_OK):
            problem = f"cannot be written: {parent} is not writable"
        else:
            continue
        raise ConfigError(f"Invalid config value: {key}={value!r} {problem}. The run writes into that folder: pass "
                          f"{key}=DIR, a directory (new or existing) on a writable disk, or move the file away.")

    weights, perceptual = _select(cfg, "loss.vgg_weights"), _select(cfg, "loss.perceptual_weight")
    if perceptual not in (0, _ABSENT) and weights not in (_ABSENT, "imagenet", "random") and not \
            Path(str(weights)).expanduser().is_file():
        raise ConfigError(f"Invalid config value: loss.vgg_weights={weights!r} is neither 'imagenet', 'random' nor an "
                          "existing file: pass the path of a torchvision vgg16-397923af.pth, or "
                          "loss.vgg_weights=imagenet.")

    demo = str(_select(cfg, "data._target_")).endswith("DemoDataModule")
    for key in ("data.val_root",) if demo else ("data.root", "data.val_root"):
        value = _select(cfg, key)
        if value not in (None, _ABSENT):
            check_image_folder(str(value), key)


# Rules whose facts are only known after loading (a checkpoint's schedule, the data's class folders): the places
# that learn them call these, so the rule and its message still live here.

def check_steps(key: str, steps: int, sampler: str, timesteps: int) -> None:
    """``key``'s sampler steps against a loaded model's schedule: the training rule, for a tool's key."""
    problem = _steps_problem(key, steps, sampler, timesteps)
    if problem:
        raise ConfigError(f"Invalid config value: {problem}.")


def check_class_name(key: str, class_name: str, class_names: list[str] | None, num_classes: int | None) -> None:
    """A class asked of a model (or ``all`` of them): it must be conditional and know the class."""
    if not num_classes and class_name == "all":
        raise ConfigError(f"{key}=all needs a conditional model (trained with model.num_classes); drop {key} for "
                          "this unconditional one.")
    if class_name == "all":
        return
    if not num_classes:
        raise ConfigError(f"{key}={class_name!r} given, but this model is unconditional (trained with "
                          f"model.num_classes=null): drop {key}.")
    if class_name not in (class_names or []):
        raise ConfigError(f"Unknown {key}={class_name!r}; this model knows {class_names}.")


def check_class_names(stored, classes: list[str] | None, num_classes: int | None) -> list[str]:
    """The class names a checkpoint stores (untrusted: a list of ``num_classes`` strings) against those of the data a
    run trains on (None: a model loaded for inference); returns the names to use. A conditional model's label ``i``
    means the folder it was trained on: continuing on folders with other names would silently relabel them."""
    if not (isinstance(stored, list) and all(isinstance(n, str) for n in stored) and len(stored) == num_classes):
        raise ConfigError(f"The checkpoint's class names {stored!r} are not a list of model.num_classes={num_classes} "
                          "names: the file was edited or damaged; use another checkpoint.")
    if classes is not None and list(classes) != stored:
        missing, new = sorted(set(stored) - set(classes)), sorted(set(classes) - set(stored))
        raise ConfigError(f"The checkpoint was trained on the classes {stored}, but data.root has {list(classes)} "
                          f"(not in the data: {missing}; new: {new}; else another order): its labels would mean "
                          "other folders. Train on the same class folders (data.root=...), or train a new model for "
                          "these classes (without resume= or ckpt_path=).")
    return stored


def check_num_classes(num_classes: int, classes: list[str]) -> None:
    """A conditional model's class count against the data's class folders."""
    if len(classes) != num_classes:
        raise ConfigError(f"model.num_classes={num_classes} but the data has {len(classes)} classes {classes}: set "
                          f"model.num_classes={len(classes)} (or null for an unconditional model).")


# A constructor of a third-party class (Lightning's Trainer, callbacks, loggers) checks its own arguments when it is
# called: its refusal is the config's problem, named by the key of the node that was built.

#: What a constructor raises for arguments it refuses.
_REFUSALS = ("MisconfigurationException", "ValueError", "TypeError")


def built(key: str, node, **kwargs):
    """``hydra.utils.instantiate(node, **kwargs)``, where ``node`` is the config's ``key``. A constructor that
    refuses its arguments (Lightning's ``MisconfigurationException``; a ``ValueError`` or ``TypeError`` of a class
    that is not art_diffusion's own, whose arguments :func:`check_arguments` checked) is a :class:`ConfigError`
    naming the node (Hydra's ``full_key`` of a nested one) and the constructor's message. Anything raised by our own
    classes other than a MisconfigurationException keeps its traceback: that is a bug, or a rule missing here."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        target = re.search(r"Error in call to target '([^']+)'", str(error))
        if cause is None or target is None:
            raise
        names = {type_.__name__ for type_ in type(cause).__mro__}
        ours = target.group(1).startswith("art_diffusion.")
        if not (names & set(_REFUSALS)) or (ours and "MisconfigurationException" not in names):
            raise
        full_key = re.search(r"^full_key: (\S+)$", str(error), re.MULTILINE)
        where = full_key.group(1) if full_key else key
        message = " ".join(str(cause).split()).replace("`", "'") or type(cause).__name__
        message += "" if message.endswith((".", "!", "?")) else "."
        raise ConfigError(f"Invalid config value under {where} (the arguments of {target.group(1)}): {message} "
                          f"Change or drop the offending {where}.KEY=VALUE override.") from error
