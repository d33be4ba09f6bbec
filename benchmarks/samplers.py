"""How close each sampler gets to the model's own ODE solution, and what that does to FD-VGG/KID: one trained DDPM,
one set of starting noise, every sampler setting side by side.

    python benchmarks/samplers.py outputs/ddpm-cpu32/checkpoints/last.ckpt --num-images 392 --reference-steps 500

Rows: each sampler/steps/spacing. Columns:
- ``RMSE to ODE``: pixel RMSE ([0, 1] scale) to DDIM with ``--reference-steps`` steps from the same noise (the
  probability-flow ODE solved finely: the image every deterministic sampler is approximating). Low noise: it
  compares the same images, so a few hundred are enough.
- ``FD-VGG`` / ``KID``: the generated set against the run's held-out test split (the images the model never saw).
  These carry sampling noise: ``--seeds`` repeats each row with other starting noise and prints mean ± spread.
- ``s / 100 img``: the sampling time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra.utils import instantiate

from art_diffusion.checkpoints import load_module
from art_diffusion.metrics.fd_vgg import features, layer_extractor
from art_diffusion.metrics.scores import scores

#: (sampler, steps, spacing) rows; spacing only applies to dpm++2m.
SETTINGS = [
    ("ddim", 20, None),
    ("ddim", 50, None),
    ("dpm++2m", 10, "time"),
    ("dpm++2m", 20, "time"),
    ("dpm++2m", 20, "logsnr"),
]


def test_split(run_config: dict, batch_size: int) -> torch.Tensor:
    data = dict(run_config["data"])
    data.update(batch_size=batch_size, num_workers=0, report_dir=None)
    datamodule = instantiate(data)
    datamodule.setup("test")
    return torch.cat([images for images, _labels, _events in datamodule.test_dataloader()])


def sample(module, sampler: str, steps: int, spacing: str | None, count: int, batch: int, seed: int,
           use_ema: bool = True):
    """``count`` images through the module's one sampling entry point (``spacing`` None: the sampler's default)."""
    return module.sample(count, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(seed),
                         use_ema=use_ema, batch_size=batch, spacing=spacing or "time").cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("--num-images", type=int, default=392, help="generated images per row and seed")
    parser.add_argument("--rmse-images", type=int, default=128, help="images compared with the ODE reference")
    parser.add_argument("--reference-steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=2, help="starting-noise seeds per row (FD/KID spread)")
    parser.add_argument("--batch-size", type=int, default=196)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    module, run_config = load_module(args.ckpt, "cpu")
    vgg = layer_extractor("imagenet")
    real = features(test_split(run_config, 64), vgg)
    print(f"{args.ckpt}: {module.image_size} px, prediction={module.prediction}, "
          f"schedule={module.schedule.kind}; {len(real)} held-out test images")

    start = time.perf_counter()
    reference = sample(module, "ddim", args.reference_steps, None, args.rmse_images, args.batch_size, seed=0)
    print(f"ODE reference: DDIM {args.reference_steps} steps, {args.rmse_images} images, "
          f"{time.perf_counter() - start:.0f} s")

    print(f"| sampler | steps | spacing | RMSE to ODE | FD-VGG ({args.seeds} seeds) | KID | s / 100 img |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for sampler, steps, spacing in SETTINGS:
        fds, kids, seconds = [], [], []
        rmse = float("nan")
        for seed in range(args.seeds):
            start = time.perf_counter()
            fake = sample(module, sampler, steps, spacing, args.num_images, args.batch_size, seed)
            seconds.append((time.perf_counter() - start) / args.num_images * 100)
            if seed == 0:
                rmse = float((fake[:args.rmse_images] - reference).pow(2).mean().sqrt())
            result = scores(real, features(fake, vgg))
            fds.append(result["fd_vgg"])
            kids.append(result["kid"])
        spread = f" ± {statistics.stdev(fds):.2f}" if len(fds) > 1 else ""
        print(f"| {sampler} | {steps} | {spacing or '-'} | {rmse:.4f} | {statistics.mean(fds):.2f}{spread} | "
              f"{statistics.mean(kids):.4f} | {statistics.median(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
