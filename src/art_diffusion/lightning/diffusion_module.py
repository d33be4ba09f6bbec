"""DiffusionModule: trains a noise predictor eps_theta(x_t, t[, y]) on art and samples new images from noise."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from art_diffusion import ConfigError
from art_diffusion.diffusion import (
    EMA,
    PREDICTIONS,
    SAMPLERS,
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    dpm_solver_2m_sample,
    guided,
    to_model_space,
    to_pixels,
)
from art_diffusion.lightning.base_module import NetworkModule
from art_diffusion.losses import DiffusionLoss

#: Checkpoint entry with the ImageFolder class names of a conditional model, so samplers can ask for "painting".
CLASS_NAMES_KEY = "art_diffusion_class_names"


class DiffusionModule(NetworkModule):
    """DDPM training with an EMA of the weights, optional class conditioning and classifier-free guidance.

    The net predicts ``prediction``: eps, v or x0 (every sampler converts it with ``schedule.x0_and_eps``). The
    objective is a :class:`DiffusionLoss` (output MSE, optional min-SNR weighting and perceptual term on the
    predicted x0). The EMA weights are used for validation, test and sampling, and are saved in checkpoints.
    """

    TASK = "generates images from noise"  # what checkpoint loaders say of this kind of model
    TRAIN_COMMAND = "python scripts/train.py model=ddpm"
    OPTIMIZED_METRIC = "val/loss"  # the default optimized_metric of runs of this module: the eps MSE, lower is better

    def __init__(
        self,
        net: nn.Module,
        loss: DiffusionLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        schedule: NoiseSchedule | None = None,
        image_size: int = 64,
        ema_decay: float = 0.999,
        num_classes: int | None = None,
        cond_drop_prob: float = 0.1,
        eval_seed: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        compile_options: dict | None = None,
        prediction: str = "eps",
    ) -> None:
        super().__init__(net, loss, optimizer, scheduler, channels_last, compile, compile_options)
        if num_classes != getattr(net, "num_classes", None):
            raise ConfigError(
                f"The denoiser was built for num_classes={getattr(net, 'num_classes', None)} but the module for "
                f"{num_classes}: set both from model.num_classes (see conf/model/ddpm.yaml)."
            )
        if prediction not in PREDICTIONS:
            raise ConfigError(f"model.prediction must be one of {PREDICTIONS}, got {prediction!r}.")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ConfigError(f"model.cond_drop_prob must be in [0, 1), got {cond_drop_prob}.")
        self.ema = EMA(self.net, ema_decay)
        self.schedule = schedule or NoiseSchedule()
        self.image_size = image_size
        self.num_classes = num_classes
        self.cond_drop_prob = cond_drop_prob
        self.eval_seed = eval_seed
        self.prediction = prediction
        self.class_names: list[str] | None = None

    # ------------------------------------------------------------------ lifecycle

    def setup(self, stage: str) -> None:
        super().setup(stage)
        classes = getattr(getattr(self.trainer, "datamodule", None), "classes", None)
        if self.num_classes and classes:
            if len(classes) != self.num_classes:
                raise ConfigError(
                    f"model.num_classes={self.num_classes} but the data has {len(classes)} classes {classes}: "
                    f"set model.num_classes={len(classes)} (or null for an unconditional model)."
                )
            self.class_names = list(classes)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.class_names is not None:
            checkpoint[CLASS_NAMES_KEY] = self.class_names

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.class_names = checkpoint.get(CLASS_NAMES_KEY, self.class_names)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update(self.net)

    # ------------------------------------------------------------------ training

    def _labels(self, batch, drop: bool) -> Tensor | None:
        if not self.num_classes:
            return None
        labels = batch[1].to(self.device)
        if drop and self.cond_drop_prob > 0:  # the "no class" label teaches the unconditional model too (CFG)
            dropped = torch.rand(labels.shape, device=self.device) < self.cond_drop_prob
            labels = labels.masked_fill(dropped, self.num_classes)
        return labels

    def _losses(self, net: nn.Module, x0: Tensor, t: Tensor, noise: Tensor, labels: Tensor | None) -> dict:
        x_t = self.schedule.q_sample(x0, t, noise)
        output = net(x_t, t, labels)
        target = self.schedule.target(self.prediction, x0, t, noise)
        x0_hat = None
        if self.loss.needs_x0:
            x0_hat = to_pixels(self.schedule.x0_and_eps(self.prediction, x_t, t, output)[0])
        return self.loss(output, target, x0_hat, to_pixels(x0) if x0_hat is not None else None,
                         snr=self.schedule.snr(t), prediction=self.prediction)

    def eps_net(self, net: nn.Module) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
        """``net`` as a noise predictor, whatever it outputs (what the samplers and guidance take)."""
        return lambda x, t, y: self.schedule.x0_and_eps(self.prediction, x, t, net(x, t, y))[1]

    def _log(self, stage: str, parts: dict, batch_size: int) -> None:
        for name, value in parts.items():
            self.log(f"{stage}/{name}", value, on_step=stage == "train", on_epoch=True, prog_bar=name == "loss",
                     batch_size=batch_size, sync_dist=stage != "train")

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x0 = to_model_space(batch[0])
        t = self.schedule.sample_timesteps(x0.shape[0], self.device)
        parts = self._losses(self.net, x0, t, torch.randn_like(x0), self._labels(batch, drop=True))
        self._log("train", parts, x0.shape[0])
        return parts["loss"]

    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        # The same t and noise for batch i every epoch, so val/loss moves only when the model does.
        x0 = to_model_space(batch[0])
        generator = torch.Generator().manual_seed(self.eval_seed + batch_idx)
        t = self.schedule.sample_timesteps(x0.shape[0], "cpu", generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        self._log(stage, self._losses(self.ema, x0, t, noise, self._labels(batch, drop=False)), x0.shape[0])

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    # ------------------------------------------------------------------ images

    @torch.no_grad()
    def log_images(self, images: Tensor) -> dict[str, Tensor]:
        """For the ReconstructionLogger: inputs, the same images half-way noised, and the EMA net's one-step x0."""
        x0 = to_model_space(images.to(self.device))
        generator = torch.Generator().manual_seed(self.eval_seed)
        t = torch.full((x0.shape[0],), self.schedule.timesteps // 2, device=self.device, dtype=torch.long)
        x_t = self.schedule.q_sample(x0, t, torch.randn(x0.shape, generator=generator).to(self.device))
        # the logger passes no labels: a conditional model is asked with the "no class" label
        labels = torch.full_like(t, self.num_classes) if self.num_classes else None
        x0_hat = self.schedule.x0_and_eps(self.prediction, x_t, t, self.ema(x_t, t, labels))[0]
        return {"inputs": images.to(self.device), "noised": to_pixels(x_t), "denoised": to_pixels(x0_hat)}

    def class_index(self, class_name: str) -> int:
        if not self.num_classes:
            raise ConfigError(f"class_name={class_name!r} given, but this model is unconditional "
                             "(trained with model.num_classes=null): drop class_name.")
        names = self.class_names or []
        if class_name not in names:
            raise ConfigError(f"Unknown class_name={class_name!r}; this model knows {names}.")
        return names.index(class_name)

    @torch.no_grad()
    def sample(
        self,
        num_images: int,
        sampler: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        guidance_scale: float = 1.0,
        use_ema: bool = True,
        progress: bool = False,
    ) -> Tensor:
        """``num_images`` new images in [0, 1] (one batch) from pure noise; ``labels`` for a conditional model."""
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
        net = self.ema if use_ema else self.net
        was_training = net.training
        net.eval()
        if labels is not None:
            labels = labels.to(self.device)
        eps_fn = guided(self.eps_net(net), labels, self.num_classes, guidance_scale)
        shape = (num_images, 3, self.image_size, self.image_size)
        if sampler == "ddpm":
            x = ddpm_sample(eps_fn, self.schedule, shape, self.device, generator, progress=progress)
        elif sampler == "dpm++2m":
            x = dpm_solver_2m_sample(eps_fn, self.schedule, shape, self.device, steps, generator, progress=progress)
        else:
            x = ddim_sample(eps_fn, self.schedule, shape, self.device, steps, eta, generator, progress=progress)
        net.train(was_training)
        return to_pixels(x)
