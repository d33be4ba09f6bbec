"""ReconstructionLogger: fixed validation images above what the module makes of them, every N epochs."""

from __future__ import annotations

import torch

from art_diffusion.callbacks.image_grid import ImageGridLogger


class ReconstructionLogger(ImageGridLogger):
    """The images are the first ``num_images`` of the (unshuffled) validation loader, so every grid shows the same
    inputs. The module must expose ``log_images(images) -> dict[str, Tensor]`` of [0, 1] image batches; each entry
    becomes a row of the grid (taming-transformers' convention)."""

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 8,
                 tag: str = "visuals/reconstructions", logged_size: int = 256) -> None:
        super().__init__(dirpath, every_n_epochs, tag, logged_size)
        self.num_images = num_images
        self.images: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        have = 0 if self.images is None else len(self.images)
        if have < self.num_images:
            new = batch[0][: self.num_images - have].detach().cpu()
            self.images = new if self.images is None else torch.cat([self.images, new])

    def make_rows(self, trainer, pl_module) -> tuple[torch.Tensor, int] | None:
        if self.images is None:
            return None
        rows = pl_module.log_images(self.images)
        return torch.cat([row.detach().float().cpu() for row in rows.values()]), len(self.images)
