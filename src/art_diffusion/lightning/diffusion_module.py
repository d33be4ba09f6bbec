"""DiffusionModule: trains a noise predictor eps_theta(x_t, t[, y]) on art and samples new images from noise."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from art_diffusion.diffusion import EMA, NoiseSchedule, eps_predictor, guided, target, to_model_space, to_pixels
from art_diffusion.diffusion import sample as run_sampler
from art_diffusion.diffusion.prediction import check_prediction, x0_and_eps
from art_diffusion.lightning.base_module import NetworkModule
from art_diffusion.losses import DiffusionLoss
from art_diffusion.run.validate import check_class_names, check_num_classes

#: Checkpoint entry with the ImageFolder class names of a conditional model, so samplers can ask for "painting".
CLASS_NAMES_KEY = "art_diffusion_class_names"


class DiffusionModule(NetworkModule):
    """DDPM training with an EMA of the weights, optional class conditioning and classifier-free guidance.

    The net predicts ``prediction``: eps, v or x0 (converted by :mod:`art_diffusion.diffusion.prediction`). The
    objective is a :class:`DiffusionLoss` (output MSE, optional min-SNR weighting and perceptual term on the
    predicted x0). The EMA weights are used for validation, test and sampling, and are saved in checkpoints.
    """

    TASK = "generates images from noise"  # what checkpoint loaders say of this kind of model
    TRAIN_COMMAND = "python scripts/train.py model=ddpm"
    OPTIMIZED_METRIC = "val/loss"  # the default optimized_metric of runs of this module: the eps MSE, lower is better
    EVAL_METRICS = ()  # val/ and test/ hold the loss's parts (and the generation scores, when that callback is on)

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
            raise ValueError(f"The denoiser was built for num_classes={getattr(net, 'num_classes', None)} but the "
                             f"module for {num_classes}: build both with the same number of classes.")
        check_prediction(prediction)
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}.")
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
            check_num_classes(self.num_classes, list(classes))
            self.class_names = list(classes)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.class_names is not None:
            checkpoint[CLASS_NAMES_KEY] = self.class_names

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if CLASS_NAMES_KEY in checkpoint and self.num_classes:
            # training (names from the data's folders): they must be the stored ones; inference: the stored ones
            self.class_names = check_class_names(checkpoint[CLASS_NAMES_KEY], self.class_names, self.num_classes)

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
        wanted = target(self.schedule, self.prediction, x0, t, noise)
        x0_hat = None
        if self.loss.needs_x0:
            x0_hat = to_pixels(x0_and_eps(self.schedule, self.prediction, x_t, t, output)[0])
        return self.loss(output, wanted, x0_hat, to_pixels(x0) if x0_hat is not None else None,
                         snr=self.schedule.snr(t), prediction=self.prediction)

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
        x0_hat = x0_and_eps(self.schedule, self.prediction, x_t, t, self.ema(x_t, t, labels))[0]
        return {"inputs": images.to(self.device), "noised": to_pixels(x_t), "denoised": to_pixels(x0_hat)}

    def class_index(self, class_name: str) -> int:
        """The label of ``class_name`` (one of :attr:`class_names`) for a conditional model."""
        if not self.num_classes:
            raise ValueError(f"class {class_name!r} asked of an unconditional model.")
        names = self.class_names or []
        if class_name not in names:
            raise ValueError(f"Unknown class {class_name!r}; this model knows {names}.")
        return names.index(class_name)

    def sample(self, num_images: int, **options) -> Tensor:
        """``num_images`` new images in [0, 1] from pure noise, on the module's device: every batch of
        :meth:`sample_batches` (same ``options``) in one tensor."""
        return torch.cat(list(self.sample_batches(num_images, **options)))

    @torch.no_grad()
    def sample_batches(
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
        batch_size: int | None = None,
        spacing: str = "time",
    ) -> Iterator[Tensor]:
        """``num_images`` new images in [0, 1] from pure noise (``labels``: one per image, for a conditional model),
        yielded in batches of ``batch_size`` (default: all at once) as they are made.

        The project's one way to sample (generate.py, evaluate.py, the callbacks and the benchmarks come here): the
        batches are drawn one after the other from ``generator``, so the same seed and ``batch_size`` give the same
        images on any device; the sampler itself is :func:`art_diffusion.diffusion.sample`.
        """
        net = self.ema if use_ema else self.net
        was_training = net.training
        net.eval()
        batch_size = batch_size or num_images
        try:
            for start in range(0, num_images, batch_size):
                n = min(batch_size, num_images - start)
                y = None if labels is None else labels[start:start + n].to(self.device)
                eps_fn = guided(eps_predictor(net, self.schedule, self.prediction), y, self.num_classes,
                                guidance_scale)
                shape = (n, 3, self.image_size, self.image_size)
                yield to_pixels(run_sampler(eps_fn, self.schedule, shape, self.device, sampler, steps, eta,
                                            generator, progress, spacing))
        finally:
            net.train(was_training)
