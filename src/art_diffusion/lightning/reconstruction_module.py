"""ReconstructionModule: trains a reconstruction network (the ConvDiffusionModel) with the hybrid loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from art_diffusion.lightning.base_module import NetworkModule


class ReconstructionModule(NetworkModule):
    """Trains the network to reconstruct its input with the hybrid loss; logs PSNR/SSIM on val and test.

    Pixels are [0, 1] everywhere here; only the loss moves to ImageNet space internally.
    """

    TASK = "reconstructs images"  # what checkpoint loaders say of this kind of model
    TRAIN_COMMAND = "python scripts/train.py"
    OPTIMIZED_METRIC = "val/psnr"  # the default optimized_metric of runs of this module (conf/train.yaml)
    EVAL_METRICS = ("psnr", "ssim")  # logged as val/ and test/ beside the loss's parts (run/validate.py names them)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
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

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and self.loss.perceptual is not None and hasattr(datamodule, "attach_target_features"):
            datamodule.attach_target_features(self._target_feature_spec())

    def _target_feature_spec(self):
        """How this module computes a training target's VGG features: the loss's own code, in the step's precision
        (the target-feature store, ``data.feature_store``, keeps them)."""
        from art_diffusion.data.feature_store import FeatureSpec

        precision, device = str(self.trainer.precision), self.trainer.strategy.root_device
        perceptual, context = self.loss.perceptual, self.trainer.precision_plugin.forward_context

        def extract(images: Tensor) -> Tensor:
            self.loss.to(device)  # before the strategy moves the module there: the build runs where training will
            with context():
                return perceptual.target_features(self.loss.normalize(images.to(device)))

        return FeatureSpec(extract, {**perceptual.identity(), "precision": precision})

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _shared_step(self, batch, stage: str) -> tuple[Tensor, Tensor, Tensor]:
        images = batch[0]
        reconstructions = self(images)
        # the training split's stored target features, with data.feature_store on (never in val/test)
        parts = self.loss(reconstructions, images, batch[2] if len(batch) > 2 else None)
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
        reconstructions = reconstructions.float().clamp(0, 1)  # metrics in fp32, also under bf16 autocast
        for name, metric in self.metrics[stage].items():
            metric(reconstructions, images.float())
            self.log(f"{stage}/{name}", metric, on_epoch=True, prog_bar=name == "psnr")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    @torch.no_grad()
    def log_images(self, images: Tensor) -> dict[str, Tensor]:
        """Images for a logger callback, rows shown top to bottom: the inputs and their reconstructions."""
        images = images.to(self.device)
        return {"inputs": images, "reconstructions": self(images).float().clamp(0, 1)}
