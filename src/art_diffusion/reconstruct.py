"""reconstruct(cfg): reconstruct image files with a checkpoint; PNGs, side-by-side comparisons, results.csv."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from art_diffusion.checkpoints import load_net
from art_diffusion.inference import Reconstruction, Reconstructor, find_inputs, resolve_device
from art_diffusion.metrics import pixel_metrics

log = logging.getLogger(__name__)

CSV_FIELDS = ("input", "reconstruction", "width", "height", "psnr", "ssim", "error")


def save_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = image.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)


def side_by_side(left: torch.Tensor, right: torch.Tensor, gap: int) -> torch.Tensor:
    """``left | white gap | right`` as one CHW image."""
    return torch.cat([left, torch.ones(left.shape[0], left.shape[1], gap), right], dim=2)


def _row(item: Reconstruction, output: Path | None) -> dict:
    if item.error is not None:
        return {"input": str(item.file.path), "error": item.error}
    scores = pixel_metrics(item.reconstruction[None], item.image[None])
    return {
        "input": str(item.file.path),
        "reconstruction": str(output),
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
    device = resolve_device(cfg.device)
    net, run_config = load_net(cfg.ckpt_path, device, cfg.trusted_targets)
    files = find_inputs(str(cfg.input))
    out = Path(cfg.output_dir)
    reconstructor = Reconstructor(net, run_config["data"]["image_size"], cfg.size, cfg.pad_mode, device)
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
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        writer.writerow({"input": "mean", **mean, "error": ""})
    _print_table(rows, mean)
    skipped = sum(bool(row.get("error")) for row in rows)
    if skipped == len(rows):
        raise RuntimeError(f"None of the {len(rows)} input file(s) could be decoded; see {out / 'results.csv'}.")
    log.info("Wrote %d reconstruction(s) and %s (%d skipped)", len(rows) - skipped, out / "results.csv", skipped)
    return rows
