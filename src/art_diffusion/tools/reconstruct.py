"""reconstruct(cfg): reconstruct image files with a checkpoint; PNGs, side-by-side comparisons, results.csv.

Two size modes: ``train`` resizes every image to the training size (what the article does), ``native`` keeps the
full resolution: the network is fully convolutional, so the image is padded to a multiple of 8, reconstructed,
and cropped back. A native image larger than ``tile_size`` runs in overlapping tiles (:func:`tiled`), so memory
is bounded by the tile, not the image.
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
from art_diffusion.storage import atomic_path, atomic_write, output_folder
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


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one side: every ``stride`` px, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _window(length: int, overlap: int, at_start: bool, at_end: bool) -> Tensor:
    """A tile's blending weights along one side: 0 over the outer quarter of the overlap (pixels whose receptive
    field crosses the tile's edge), a linear ramp up to 1 over the next half, 1 inside; no ramp at an image edge."""
    w = torch.ones(length)
    margin, ramp = overlap // 4, overlap - 2 * (overlap // 4)
    if overlap and ramp:
        rise = torch.cat([torch.zeros(margin), (torch.arange(ramp) + 0.5) / ramp])
        if not at_start:
            w[:len(rise)] = rise
        if not at_end:
            w[length - len(rise):] = torch.minimum(w[length - len(rise):], rise.flip(0))
    return w


@torch.no_grad()
def tiled(net: nn.Module, x: Tensor, tile: int, overlap: int, device: torch.device) -> Tensor:
    """``net(x)`` of a (padded) NCHW batch computed tile by tile on ``device``, the result on the CPU.

    Tiles of ``tile`` px overlapping by at least ``overlap`` px start on multiples of the network's downsampling
    factor, so each tile sees the same pooling grid as the whole image; where tiles overlap their outputs are
    blended by :func:`_window`, which ignores the outer quarter of each overlap (the pixels a tile's border
    changes) and ramps linearly across the rest, so no seam shows. With an overlap at least twice the receptive
    field's radius the result equals the untiled one up to float rounding. Peak memory: one tile's activations
    plus the input and output images.
    """
    n, _, h, w = x.shape
    stride = tile - overlap
    rows, cols = _starts(h, tile, stride), _starts(w, tile, stride)
    out: Tensor | None = None
    weight_h, weight_w = torch.zeros(h), torch.zeros(w)
    for top in rows:
        th = min(tile, h)
        wy = _window(th, overlap, top == 0, top + th == h)
        weight_h[top:top + th] += wy
        for left in cols:
            tw = min(tile, w)
            wx = _window(tw, overlap, left == 0, left + tw == w)
            if top == rows[0]:
                weight_w[left:left + tw] += wx
            y = net(x[..., top:top + th, left:left + tw].to(device)).float().cpu()
            if out is None:
                out = torch.zeros(n, y.shape[1], h, w)
            out[..., top:top + th, left:left + tw] += y * (wy[:, None] * wx[None, :])
    # every tile's window is the product of its row's and column's: the weights sum to the outer product
    return out.div_(weight_h[:, None] * weight_w[None, :])


class Reconstructor:
    """Decodes files the way the model expects and runs the network on batches of them."""

    def __init__(
        self,
        net: nn.Module,
        image_size: int,
        size: str = "train",
        pad_mode: str = "reflect",
        device: torch.device | str = "cpu",
        tile_size: int | None = None,
        tile_overlap: int = 64,
    ) -> None:
        if size not in SIZE_MODES:
            raise ValueError(f"size must be one of {SIZE_MODES}, got {size!r}.")
        self.net = net.to(device).eval()
        self.image_size = image_size
        self.size = size
        self.pad_mode = pad_mode
        self.device = torch.device(device)
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap

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
        if self.tile_size and max(h, w) > self.tile_size:  # on the CPU: only one tile at a time on the device
            batch = pad_to_multiple(images.cpu(), DOWNSAMPLING_FACTOR, self.pad_mode)
            return tiled(self.net, batch, self.tile_size, self.tile_overlap, self.device)[..., :h, :w].clamp_(0, 1)
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


def to_pixels(image: torch.Tensor) -> torch.Tensor:
    """A CHW [0, 1] float image as HWC uint8 (one float temporary: native-size images are large)."""
    if image.dtype == torch.uint8:
        return image.permute(1, 2, 0)
    return image.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """A CHW image in [0, 1] as the RGB PIL image whose pixels :func:`save_png` writes."""
    return Image.fromarray(np.ascontiguousarray(to_pixels(image).numpy()))


def save_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        to_pil(image).save(tmp, format="png")


def side_by_side(left: torch.Tensor, right: torch.Tensor, gap: int) -> torch.Tensor:
    """``left | white gap | right`` as one CHW uint8 image."""
    white = torch.full((left.shape[0], left.shape[1], gap), 255, dtype=torch.uint8)
    return torch.cat([to_pixels(left).permute(2, 0, 1), white, to_pixels(right).permute(2, 0, 1)], dim=2)


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
    reconstructor = Reconstructor(module.net, run_config["data"]["image_size"], cfg.size, cfg.pad_mode, device,
                                  cfg.get("tile_size"), cfg.get("tile_overlap", 64))
    with output_folder(out, inputs=[item.path for item in files]) as folder:
        folders = ("reconstructions", "side_by_side") if cfg.side_by_side else ("reconstructions",)
        folder.claim("results.csv", *(f"{sub}/{item.name}.png" for item in files for sub in folders))
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
