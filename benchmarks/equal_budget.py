"""Held-out quality at an equal budget: the same wall-clock time (what a user feels) or the same number of steps.

    # what the article's loop, the project's default and its fastest configuration reach in 10 minutes each
    python benchmarks/equal_budget.py --root ../shared/data/art-dev --budget-s 600 --pipelines article default fastest
    # bf16 autocast against fp32 at an equal number of steps
    python benchmarks/equal_budget.py --root ../shared/data/art-dev --steps 60 --pipelines fp32 default
    # the target-feature store against computing every target (the default), at an equal number of steps
    python benchmarks/equal_budget.py --root ../shared/data/art-dev --steps 40 --pipelines default store

``--eval-count`` images of ``--root`` (a seeded split) are held out; every pipeline trains on the rest at 128 px,
batch 32, 2 data workers, in its own subprocess, one after the other (each has the machine's cores to itself). The
wall-clock budget counts from the pipeline's start (data set-up, cache build and compilation included) to the
end of its last step. Quality is PSNR, SSIM and LPIPS (VGG; lower is better) of the held-out reconstructions,
inferred in fp32; the article's outputs are denormalised as its inference step does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402  (benchmarks/ is not a package)

PIPELINES = {
    "article": ("article loop (plain PyTorch, fp32)", None),
    "default": ("project default (`python scripts/train.py`)", []),
    "fp32": ("project default in fp32 (`trainer.precision=32-true`)", ["trainer.precision=32-true"]),
    "no-store": ("project default without the target-feature store (`data.feature_store=false`)",
                 ["data.feature_store=false"]),
    "unfused": ("project default with PyTorch's ReLU/BatchNorm/max-pool ops (`model.net.fused=false`)",
                ["model.net.fused=false"]),
    "previous": ("defaults before issue 25 (`cpu_memory=release data.feature_store=false model.net.fused=false`)",
                 ["cpu_memory=release", "data.feature_store=false", "model.net.fused=false"]),
    "fastest": ("project fastest (default + `model.compile=true`)", ["model.compile=true"]),
    "batch-16": ("project default at batch 16 (`data.batch_size=16`)", ["data.batch_size=16"]),
    "batch-64": ("project default at batch 64 (`data.batch_size=64`)", ["data.batch_size=64"]),
}


def batch_size(args, name: str) -> int:
    """The pipeline's batch: its ``data.batch_size`` override, else ``--batch-size``."""
    for override in PIPELINES[name][1] or []:
        if override.startswith("data.batch_size="):
            return int(override.split("=", 1)[1])
    return args.batch_size


def spawn(args, name: str) -> dict:
    overrides = PIPELINES[name][1]
    cmd = [sys.executable, str(HERE / "compare.py"), "--worker", "article" if overrides is None else "project",
           "--train-root", str(args.train_root), "--eval-root", str(args.eval_root), "--steps", str(args.steps),
           "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--seed", str(args.seed), "--device", args.device, "--lpips", "--base-override=none",
           "--cache-dir", str(args.cache_dir),
           *(f"--project-override={o}" for o in overrides or [])]
    if args.budget_s:
        cmd += ["--budget-s", str(args.budget_s)]
    if args.grids:
        args.grids.mkdir(parents=True, exist_ok=True)
        cmd += ["--grid", str(args.grids / f"equal_budget_{name}.png")]
    print(f"[equal_budget] {name} ...", file=sys.stderr, flush=True)
    result = compare.run_worker(cmd, name)
    print(f"[equal_budget] {name}: {result['steps']} steps, {result['psnr']:.2f} dB", file=sys.stderr, flush=True)
    return result


def report(args, results: dict[str, dict]) -> str:
    budget = f"{args.budget_s / 60:g} minutes of wall clock each" if args.budget_s else f"{args.steps} steps each"
    first = next(iter(results.values()))
    lines = [f"Command: `python benchmarks/equal_budget.py {' '.join(args.argv)}`", "",
             f"Machine: {compare.machine()}.", "",
             f"Budget: {budget}; {args.train_count} training images, {args.eval_count} held out, {args.image_size} px, "
             f"batch {args.batch_size} unless the pipeline says otherwise.", "",
             "| pipeline | precision | steps | images/s (training) | PSNR (dB) | SSIM | LPIPS |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        seconds = r["stamps"][-1] - r["stamps"][0]
        lines.append(f"| {PIPELINES[name][0]} | {r.get('precision', '32-true')} | {r['steps']} | "
                     f"{r['steps'] * batch_size(args, name) / seconds:.2f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                     f"{r['lpips']:.3f} |")
    for name, r in list(results.items())[1:]:
        lines.append(f"| difference {name} - {next(iter(results))} | | | | {r['psnr'] - first['psnr']:+.2f} | "
                     f"{r['ssim'] - first['ssim']:+.3f} | {r['lpips'] - first['lpips']:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="an ImageFolder; --eval-count images are held out")
    p.add_argument("--eval-count", type=int, default=200)
    p.add_argument("--budget-s", type=float, help="wall-clock seconds per pipeline (else --steps)")
    p.add_argument("--steps", type=int, default=10**9, help="optimizer steps per pipeline")
    p.add_argument("--pipelines", nargs="+", default=["article", "default", "fastest"], choices=list(PIPELINES))
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--grids", type=Path, help="write <dir>/equal_budget_<pipeline>.png: 8 held-out images above "
                   "their reconstructions")
    args = p.parse_args()
    if not args.budget_s and args.steps == 10**9:
        p.error("give --budget-s or --steps")
    args.argv = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        args.train_root, args.eval_root = compare.split_folder(args.root, args.eval_count, args.seed, Path(tmp))
        args.train_count = sum(1 for _ in args.train_root.glob("*/*"))
        args.cache_dir = Path(tmp) / "cache"  # this invocation's pixel cache and feature store, removed with it
        results = {name: spawn(args, name) for name in args.pipelines}
    print(report(args, results))


if __name__ == "__main__":
    main()
