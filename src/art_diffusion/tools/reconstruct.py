"""reconstruct(cfg): reconstruct image files with a checkpoint; PNGs, side-by-side comparisons, results.csv.

Two size modes: ``train`` resizes every image to the training size (what the article does), ``native`` keeps the
full resolution: the network is fully convolutional, so the image is padded to a multiple of 8, reconstructed,
and cropped back.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn

from art_diffusion import DataError
from art_diffusion.checkpoints import load_module
from art_diffusion.data.images import BadImage, load_rgb, rgb_array
from art_diffusion.data.report import printable
from art_diffusion.lightning import ReconstructionModule
from art_diffusion.metrics.pixel import pixel_metrics
from art_diffusion.nets import DOWNSAMPLING_FACTOR
from art_diffusion.run.validate import check_values
from art_diffusion.storage import atomic_path, atomic_write
from art_diffusion.tools.inputs import InputFile, find_inputs, resolve_device

log = logging.getLogger(__name__)

SIZE_MODES = ("train", "native")
CSV_FIELDS = ("input", "reconstruction", "width", "height", "psnr", "ssim", "error")


@dataclass
class Reconstruction:
    file: InputFile | None  # None: an in-memory image (art_diffusion.load_pretrained)
    image: Tensor | None = None  # CHW in [0, 1], at the resolution the network saw
    reconstruction: Tensor | None = None
    error: str | None = None  # why the file was skipped


def pad_to_multiple(x: Tensor, multiple: int = DOWNSAMPLING_FACTOR, mode: str = "reflect") -> Tensor:
    """Pad the bottom and right of an NCHW batch so both sides are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not (pad_h or pad_w):
        return x
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"  # reflection needs the image to be larger than the padding
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class Reconstructor:
    """Decodes files the way the model expects and runs the network on batches of them."""

    def __init__(
        self,
        net: nn.Module,
        image_size: int,
        size: str = "train",
        pad_mode: str = "reflect",
        device: torch.device | str = "cpu",
    ) -> None:
        if size not in SIZE_MODES:
            raise ValueError(f"size must be one of {SIZE_MODES}, got {size!r}.")
        self.net = net.to(device).eval()
        self.image_size = image_size
        self.size = size
        self.pad_mode = pad_mode
        self.device = torch.device(device)

    def load(self, path: Path | Image.Image) -> Tensor:
        """CHW float in [0, 1] of an image file or a PIL image; raises :class:`BadImage` for a file that cannot be
        decoded."""
        side = self.image_size if self.size == "train" else None
        pixels = rgb_array(path, side) if isinstance(path, Image.Image) else load_rgb(path, side)
        return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """Reconstructions of an NCHW batch in [0, 1], same size as the batch."""
        h, w = images.shape[-2:]
        batch = pad_to_multiple(images.to(self.device), DOWNSAMPLING_FACTOR, self.pad_mode)
        return self.net(batch)[..., :h, :w].clamp(0, 1)

    def run(self, files: Sequence[InputFile], batch_size: int) -> Iterator[Reconstruction]:
        """One :class:`Reconstruction` per file, in order; undecodable files come back with ``error`` set."""
        for start in range(0, len(files), batch_size):
            chunk = [Reconstruction(f) for f in files[start:start + batch_size]]
            for item in chunk:
                try:
                    item.image = self.load(item.file.path)
                except BadImage as exc:
                    item.error = str(exc)
                    log.warning("Skipping unreadable image %s (%s)", printable(str(item.file.path)),
                                printable(str(exc)))
            self.fill(chunk)
            yield from chunk

    def fill(self, chunk: Sequence[Reconstruction]) -> None:
        """Set ``reconstruction`` of every decoded item of one batch-sized chunk: native sizes differ between
        files, so only items of the same shape go through the network together."""
        by_shape: dict[tuple[int, ...], list[Reconstruction]] = {}
        for item in chunk:
            if item.image is not None:
                by_shape.setdefault(tuple(item.image.shape), []).append(item)
        for group in by_shape.values():
            outputs = self(torch.stack([item.image for item in group])).cpu()
            for item, output in zip(group, outputs):
                item.reconstruction = output


def to_pil(image: torch.Tensor) -> Image.Image:
    """A CHW image in [0, 1] as the RGB PIL image whose pixels :func:`save_png` writes."""
    pixels = image.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))


def save_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        to_pil(image).save(tmp, format="png")


def side_by_side(left: torch.Tensor, right: torch.Tensor, gap: int) -> torch.Tensor:
    """``left | white gap | right`` as one CHW image."""
    return torch.cat([left, torch.ones(left.shape[0], left.shape[1], gap), right], dim=2)


def _row(item: Reconstruction, output: Path | None) -> dict:
    if item.error is not None:
        return {"input": printable(str(item.file.path)), "error": printable(item.error)}
    scores = pixel_metrics(item.reconstruction[None], item.image[None])
    return {
        "input": printable(str(item.file.path)),
        "reconstruction": printable(str(output)),
        "width": item.image.shape[2],
        "height": item.image.shape[1],
        **{name: float(value[0]) for name, value in scores.items()},
        "error": "",
    }


def _mean(rows: list[dict], key: str) -> float:
    values = [row[key] for row in rows if not row.get("error") and not math.isnan(row[key])]
    return sum(values) / len(values) if values else math.nan


def _print_table(rows: list[dict], mean: dict) -> None:
    width = max([len(Path(r["input"]).name) for r in rows] + [len("mean")])
    print(f"{'image':<{width}}  {'PSNR (dB)':>9}  {'SSIM':>6}")
    for row in rows:
        name = Path(row["input"]).name
        if row.get("error"):
            print(f"{name:<{width}}  skipped: {row['error']}")
        else:
            print(f"{name:<{width}}  {row['psnr']:9.2f}  {row['ssim']:6.4f}")
    print(f"{'mean':<{width}}  {mean['psnr']:9.2f}  {mean['ssim']:6.4f}")


def reconstruct(cfg: DictConfig) -> list[dict]:
    """Reconstruct every input of ``cfg.input``; returns the rows of results.csv (without the mean row)."""
    check_values(cfg, "reconstruct")
    device = resolve_device(cfg.device)
    module, run_config = load_module(cfg.ckpt_path, device, ReconstructionModule, cfg.trusted_classes)
    files = find_inputs(str(cfg.input))
    out = Path(cfg.output_dir)
    reconstructor = Reconstructor(module.net, run_config["data"]["image_size"], cfg.size, cfg.pad_mode, device)
    log.info("Reconstructing %d file(s) with %s (size=%s) into %s", len(files), cfg.ckpt_path, cfg.size, out)

    rows = []
    for item in reconstructor.run(files, cfg.batch_size):
        output = None
        if item.error is None:
            output = out / "reconstructions" / f"{item.file.name}.png"
            save_png(item.reconstruction, output)
            if cfg.side_by_side:
                comparison = side_by_side(item.image, item.reconstruction, cfg.gap)
                save_png(comparison, out / "side_by_side" / f"{item.file.name}.png")
        rows.append(_row(item, output))

    mean = {"psnr": _mean(rows, "psnr"), "ssim": _mean(rows, "ssim")}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    writer.writerow({"input": "mean", **mean, "error": ""})
    atomic_write(out / "results.csv", text.getvalue())
    _print_table(rows, mean)
    skipped = sum(bool(row.get("error")) for row in rows)
    if skipped == len(rows):
        raise DataError(f"None of the {len(rows)} input file(s) could be decoded; see {out / 'results.csv'}.")
    log.info("Wrote %d reconstruction(s) and %s (%d skipped)", len(rows) - skipped, out / "results.csv", skipped)
    return rows
