"""NetworkModule: the base every LightningModule of the project shares, whatever it trains the network to do."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from art_diffusion.checkpoints import CONFIG_KEY
from art_diffusion.losses import WeightedLoss


class NetworkModule(L.LightningModule):
    """A network, its loss, and the optimizer/scheduler partials from the config.

    Nothing but tensors and plain data goes into a checkpoint, so it loads with ``torch.load(weights_only=True)``:
    the network and loss keep their state as modules, and the run's resolved config (``run_config``, set by
    train()) says how to rebuild them. The loss's VGG is resolved once per node (``prepare_data``) and built on
    every rank (``setup``).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: WeightedLoss,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_options: dict | None = None,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_options = (compile_options or {}) if compile else None
        self._compiled = False
        self.run_config: dict | None = None

    def prepare_data(self) -> None:
        if self.loss.perceptual is not None:
            self.loss.perceptual.prepare()

    def setup(self, stage: str) -> None:
        if self.loss.perceptual is not None:
            self.loss.perceptual.build()
            if self.channels_last:  # the VGG sees the network's NHWC output: NHWC weights spare a layout change
                self.loss.perceptual.to(memory_format=torch.channels_last)
        if self.compile_options is not None and not self._compiled:
            # Module.compile() compiles in place: the state dict keeps its plain keys (no "_orig_mod."), so the
            # checkpoints load into an uncompiled network. Done here, after subclasses copied the net (EMA).
            self.net.compile(**self.compile_options)
            self._compiled = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint[CONFIG_KEY] = self.run_config

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("This module was built without an optimizer (for inference); it cannot be trained.")
        optimizer = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
