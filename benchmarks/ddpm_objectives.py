"""Which objective and which net, measured: the `experiment=ddpm_cpu32` preset against variants that each change
one thing, trained for the same number of steps on the same split, scored against the held-out test split.

    python benchmarks/ddpm_objectives.py --root ../shared/data/art-dev --steps 1500

Variants (each one override of the preset, run as a user runs it: `scripts/train.py` in a subprocess):
- preset: v-prediction, min-SNR-5 weighting, cosine schedule, EMA (0.999, warmed up), the project's UNet;
- eps / linear / no min-SNR: one objective choice undone;
- diffusers: diffusers' UNet2DModel at the same sizes (`model/net=diffusers_unet`, needs `.[diffusers]`);
- "preset, raw weights": the preset's run sampled without its EMA (no second training run needed).

"run wall s" is the training subprocess's wall time (start-up and validation included); "net step s" is the median
time of one training step of the net alone, timed after all the runs, one net after the other. Every run has the
same seed, split and steps; the scores use the same sampler and starting noise (see
benchmarks/samplers.py for the scoring). One training seed per variant: differences of the order of the FD
spread between sampling seeds are not differences.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import samplers  # noqa: E402  (benchmarks/ is not a package)

from art_diffusion.checkpoints import load_module  # noqa: E402
from art_diffusion.metrics.fd_vgg import features, layer_extractor  # noqa: E402
from art_diffusion.metrics.scores import scores  # noqa: E402

VARIANTS = {
    "preset": ("preset (v, min-SNR-5, cosine, EMA, our UNet)", []),
    "eps": ("eps-prediction", ["model.prediction=eps"]),
    "no_min_snr": ("no min-SNR weighting", ["loss.min_snr_gamma=null"]),
    "linear": ("linear schedule", ["model.schedule.kind=linear"]),
    "diffusers": ("diffusers UNet2DModel, same sizes", ["model/net=diffusers_unet"]),
}
RAW = "preset, raw weights (no EMA)"


def train(args, name: str, run_dir: Path) -> float:
    cmd = [sys.executable, str(HERE.parent / "scripts" / "train.py"), "experiment=ddpm_cpu32",
           f"data.root={args.root}", f"+trainer.max_steps={args.steps}", "trainer.max_time=null",
           "trainer.enable_progress_bar=false", "test=false", "callbacks.generation_scores.every_n_epochs=0",
           "callbacks.samples.every_n_epochs=1000", "callbacks.reconstructions.every_n_epochs=1000",
           f"hydra.run.dir={run_dir}", *VARIANTS[name][1]]
    print(f"[ddpm_objectives] {name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def step_seconds(net: torch.nn.Module, repeats: int = 15) -> float:
    """Median seconds of one training step of ``net`` alone (batch 32, 32 px, bf16 autocast as the preset on this
    CPU, Adam), for comparing nets without the data loading, validation and start-up in the run's wall time."""
    net = copy.deepcopy(net).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, t = torch.randn(32, 3, 32, 32), torch.randint(0, 1000, (32,))
    times = []
    for i in range(repeats + 5):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net(x, t).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 5:  # warm-up (oneDNN builds its kernels in the first steps)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def score(args, module, real, vgg, use_ema: bool) -> tuple[list[float], list[float]]:
    fds, kids = [], []
    for seed in range(args.seeds):
        fake = samplers.sample(module, args.sampler, args.sample_steps, None, args.num_images, args.batch_size, seed,
                               use_ema)
        result = scores(real, features(fake, vgg))
        fds.append(result["fd_vgg"])
        kids.append(result["kid"])
    return fds, kids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per variant (batch 32)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--num-images", type=int, default=392, help="generated images per sampling seed")
    parser.add_argument("--seeds", type=int, default=2, help="sampling seeds per variant")
    parser.add_argument("--sampler", default="dpm++2m")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=196)
    parser.add_argument("--keep", type=Path, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--rescore", action="store_true", help="score the runs already in --keep, not train them")
    args = parser.parse_args()

    vgg, real, rows, nets = layer_extractor("imagenet"), None, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for name in args.variants:
            done = base / name / "checkpoints" / "last.ckpt"
            seconds = float("nan") if args.rescore and done.exists() else train(args, name, base / name)
            with torch.no_grad():
                module, run_config = load_module(str(base / name / "checkpoints" / "last.ckpt"), "cpu")
                if real is None:
                    real = features(samplers.test_split(run_config, 64), vgg)
                params = sum(p.numel() for p in module.net.parameters()) / 1e6
                nets[name] = module.net
                for label, use_ema in [(VARIANTS[name][0], True)] + ([(RAW, False)] if name == "preset" else []):
                    fds, kids = score(args, module, real, vgg, use_ema)
                    rows.append((name, label, params, seconds, fds, kids))
                    print(f"[ddpm_objectives] {label}: FD {statistics.mean(fds):.2f}", file=sys.stderr, flush=True)

    with torch.enable_grad():  # after every run, one net after the other: nothing else shares the cores
        step_s = {name: step_seconds(net) for name, net in nets.items()}
    print(f"{args.steps} steps of batch 32 per variant at 32 px; {args.seeds} x {args.num_images} samples "
          f"({args.sampler}, {args.sample_steps} steps) against the {len(real)} held-out test images")
    print("| variant | params (M) | run wall s | net step s | FD-VGG (mean ± sd over seeds) | KID |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, label, params, seconds, fds, kids in rows:
        spread = f" ± {statistics.stdev(fds):.2f}" if len(fds) > 1 else ""
        print(f"| {label} | {params:.2f} | {seconds:.0f} | {step_s[name]:.3f} | "
              f"{statistics.mean(fds):.2f}{spread} | {statistics.mean(kids):.4f} |")


if __name__ == "__main__":
    main()
