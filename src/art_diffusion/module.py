"""ReconstructionModule: trains a reconstruction network (the ConvDiffusionModel) with the hybrid loss."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from art_diffusion.loss import HybridLoss

#: Checkpoint entry holding the run's resolved config (plain dicts), enough to rebuild model and data settings.
CONFIG_KEY = "art_diffusion_config"


class ReconstructionModule(L.LightningModule):
    """Holds the network and its loss; the optimizer and scheduler come in as partials from the config.

    Pixels are [0, 1] everywhere here; only the loss moves to ImageNet space internally.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: HybridLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_options: dict | None = None,
    ) -> None:
        super().__init__()
        # Nothing but tensors and plain data goes into a checkpoint, so it loads with torch.load(weights_only=True):
        # the network and loss keep their state as modules, and the run's resolved config (set by train(), see
        # on_save_checkpoint) says how to rebuild them.
        self.channels_last = channels_last
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        if compile:
            # Module.compile() compiles in place: the state dict keeps its plain keys (no "_orig_mod."), so the
            # checkpoints load into an uncompiled network.
            self.net.compile(**(compile_options or {}))
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config: dict | None = None
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict(
                    {
                        "psnr": PeakSignalNoiseRatio(data_range=1.0),
                        "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
                    }
                )
                for stage in ("val", "test")
            }
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint[CONFIG_KEY] = self.run_config

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def prepare_data(self) -> None:
        # Runs once per node before any rank builds the loss: fills the VGG weight cache.
        if self.loss.perceptual is not None:
            self.loss.perceptual.prepare()

    def setup(self, stage: str) -> None:
        if self.loss.perceptual is not None:
            self.loss.perceptual.build()

    def _shared_step(self, batch, stage: str) -> tuple[Tensor, Tensor, Tensor]:
        images = batch[0]
        reconstructions = self(images)
        parts = self.loss(reconstructions, images)
        on_step = stage == "train"
        for name, value in parts.items():
            self.log(f"{stage}/{name}", value, on_step=on_step, on_epoch=True, prog_bar=name == "loss",
                     batch_size=images.shape[0], sync_dist=stage != "train")
        return parts["loss"], images, reconstructions

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, _, _ = self._shared_step(batch, "train")
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        _, images, reconstructions = self._shared_step(batch, stage)
        for name, metric in self.metrics[stage].items():
            metric(reconstructions.clamp(0, 1), images)
            self.log(f"{stage}/{name}", metric, on_epoch=True, prog_bar=name == "psnr")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    @torch.no_grad()
    def log_images(self, images: Tensor) -> dict[str, Tensor]:
        """Images for a logger callback, rows shown top to bottom: the inputs and their reconstructions."""
        images = images.to(self.device)
        return {"inputs": images, "reconstructions": self(images).clamp(0, 1)}

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
