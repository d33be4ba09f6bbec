"""The project against the article's training loop, side by side on one folder, in one run.

    python benchmarks/compare.py --root ../shared/data/art-dev --eval-count 200 --image-size 128 --steps 150

Measures (each pipeline in its own subprocess, so peak memory is its own):
  1. training throughput (images/s, median of timed windows after warm-up): article loop vs the project's Lightning
     training at identical settings (fp32, same model, loss, batch, image size, workers);
  2. the project's fastest CPU configuration (pixel cache, channels_last) and where a step's time goes;
  3. peak memory (RSS on CPU, torch.cuda.max_memory_allocated on GPU);
  4. quality at an equal budget: PSNR/SSIM on a held-out folder after the same number of optimizer steps.
Prints a markdown table and, with --write, replaces the "Comparison with the article" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SECTION = "## Comparison with the article's training loop"


# ----------------------------------------------------------------------------------------------- shared helpers
def add_run_arguments(p, steps: int, warmup: int, window: int | None = None) -> None:
    """The arguments levers.py and step_profile.py share: the data, the step's size, how long and how often to run,
    and their workers' hidden ones (the split train folder, this invocation's cache directory)."""
    p.add_argument("--root", type=Path, help="an ImageFolder (art-dev)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--warmup", type=int, default=warmup)
    if window is not None:
        p.add_argument("--window", type=int, default=window)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)


def split_folder(root: Path, eval_count: int, seed: int, dest: Path) -> tuple[Path, Path]:
    """Symlink a seeded ``eval_count`` images of ``root`` into dest/eval and the rest into dest/train."""
    files = sorted(p for p in root.glob("*/*") if p.is_file())
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    eval_set = set(order[:eval_count])
    for i, path in enumerate(files):
        target = dest / ("eval" if i in eval_set else "train") / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())
    return dest / "train", dest / "eval"


def windows_images_per_s(stamps: list[float], batch: int, warmup: int, window: int) -> list[float]:
    """Images/s over consecutive windows of ``window`` steps, after ``warmup`` steps."""
    stamps = stamps[warmup:]
    return [window * batch / (stamps[i + window] - stamps[i]) for i in range(0, len(stamps) - window, window)]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vgg_state():
    from art_diffusion.nets.vgg import load_vgg16_state

    return load_vgg16_state("imagenet", 16)


def eval_images(eval_root: Path, image_size: int) -> torch.Tensor:
    from art_diffusion.data.images import BadImage, load_rgb
    from art_diffusion.data.listing import list_image_folder

    images = []
    for file in list_image_folder(eval_root).files:
        try:
            images.append(torch.from_numpy(load_rgb(file.path, image_size)).permute(2, 0, 1).float() / 255)
        except BadImage:
            continue
    return torch.stack(images)


@torch.no_grad()
def psnr_ssim(reconstruct, images: torch.Tensor, batch: int, lpips: bool = False,
              grid: str | None = None) -> dict[str, float]:
    """Held-out quality of ``reconstruct`` (fp32 inference): PSNR and SSIM, and LPIPS (VGG, offline) if asked;
    ``grid``: a PNG of the first 8 held-out images (top row) above their reconstructions."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
    distances = []
    if lpips:
        from art_diffusion.metrics.lpips import LPIPS

        lpips_net = LPIPS()
    for chunk in images.split(batch):
        out = reconstruct(chunk).float().clamp(0, 1)
        psnr.update(out, chunk)
        ssim.update(out, chunk)
        if lpips:
            distances.append(lpips_net(out, chunk))
    if grid:
        from torchvision.utils import save_image

        save_image(torch.cat([images[:8], reconstruct(images[:8]).float().clamp(0, 1)]), grid, nrow=8, padding=2,
                   pad_value=1.0)
    result = {"psnr": float(psnr.compute()), "ssim": float(ssim.compute())}
    return result | ({"lpips": float(torch.cat(distances).mean())} if lpips else {})


# ------------------------------------------------------------------------------------------ the article's side
def run_article(args) -> dict:
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(HERE))
    from article_loop import ArticleTrainer, article_dataset, denormalize

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    deadline = t0 + args.budget_s if getattr(args, "budget_s", None) else float("inf")
    dataset = article_dataset(str(args.train_root), args.image_size)  # includes the serial verify scan
    startup = time.perf_counter() - t0
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        drop_last=True, persistent_workers=args.workers > 0)
    trainer = ArticleTrainer(vgg_state(), device=device)
    stamps, steps = [time.perf_counter()], 0
    while steps < args.steps:
        for images, _ in loader:
            trainer.step(images)
            stamps.append(time.perf_counter())
            steps += 1
            if steps == args.steps or stamps[-1] >= deadline:
                break
        else:
            trainer.end_epoch()
            continue
        break
    result = {"startup_s": startup, "stamps": stamps, "peak_mb": peak_memory_mb(device), "steps": steps}
    if args.eval_root:
        from art_diffusion.nets.vgg import ImageNetNormalize

        normalize = ImageNetNormalize().to(device)
        trainer.model.eval()
        result |= psnr_ssim(lambda x: denormalize(trainer.model(normalize(x.to(device)))).cpu(),
                            eval_images(args.eval_root, args.image_size), args.batch_size,
                            getattr(args, "lpips", False), getattr(args, "grid", None))
    return result


# ------------------------------------------------------------------------------------------ the project's side
def compose(args, extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [
        f"data.root={args.train_root}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}", "data.val_fraction=0", "data.test_fraction=0", f"seed={args.seed}",
        "paths.root_dir=.", "paths.output_dir=.", "data.report_dir=null",
        # caches of this invocation's temporary split folder: in its temporary directory, removed with it
        *([f"data.cache_dir={args.cache_dir}"] if getattr(args, "cache_dir", None) else []), *extra,
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


class StepTimer:
    """A Lightning callback that stamps the end of every training step and stops training at ``deadline``."""

    def __new__(cls, deadline: float = float("inf")):
        import lightning as L

        class _Timer(L.Callback):
            def __init__(self):
                self.stamps = [time.perf_counter()]

            def on_train_batch_end(self, trainer, *unused):
                self.stamps.append(time.perf_counter())
                if self.stamps[-1] >= deadline:
                    trainer.should_stop = True

        return _Timer()


def run_project(args, extra: list[str], callbacks=()) -> dict:
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import TensorBoardLogger

    from art_diffusion.run.memory import apply_cpu_memory
    from art_diffusion.run.precision import resolve_trainer_precision

    cfg = compose(args, extra)
    resolve_trainer_precision(cfg)  # trainer.precision=auto, as train() resolves it
    apply_cpu_memory(cfg.cpu_memory)  # as train() does
    L.seed_everything(args.seed, verbose=False)
    t0 = time.perf_counter()
    deadline = t0 + args.budget_s if getattr(args, "budget_s", None) else float("inf")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    startup = time.perf_counter() - t0
    module = instantiate(cfg.model)
    timer = StepTimer(deadline)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = L.Trainer(
            accelerator=args.device, devices=1, precision=cfg.trainer.precision, max_steps=args.steps,
            limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, logger=TensorBoardLogger(logdir), callbacks=[timer, *callbacks],
            log_every_n_steps=10,
        )
        trainer.fit(module, datamodule=datamodule)
    device = module.device
    result = {"startup_s": startup, "stamps": timer.stamps, "peak_mb": peak_memory_mb(device),
              "steps": trainer.global_step, "precision": cfg.trainer.precision}
    if args.eval_root:
        module.eval()
        result |= psnr_ssim(lambda x: module(x.to(device)).cpu(), eval_images(args.eval_root, args.image_size),
                            args.batch_size, getattr(args, "lpips", False), getattr(args, "grid", None))
    return result


def run_profile(args, extra: list[str]) -> dict:
    """Where a step's time goes: the project's components in a hand-written loop with a timer around each phase."""
    from hydra.utils import instantiate

    from art_diffusion.run.memory import apply_cpu_memory

    cfg = compose(args, extra)
    apply_cpu_memory(cfg.cpu_memory)  # as train() does
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = instantiate(cfg.model)
    module.setup("fit")
    optimizer = module.configure_optimizers()["optimizer"]
    channels_last = cfg.model.get("channels_last", False)
    phases = {k: [] for k in ("data", "forward", "loss (VGG)", "backward", "optimizer")}
    loader = iter(datamodule.train_dataloader())
    for step in range(args.steps):
        t = [time.perf_counter()]
        images = next(loader)[0]
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        t.append(time.perf_counter())
        out = module(images)
        t.append(time.perf_counter())
        loss = module.loss(out, images)["loss"]
        t.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        optimizer.step()
        t.append(time.perf_counter())
        if step >= args.warmup:
            for (name, times), a, b in zip(phases.items(), t, t[1:]):
                times.append(b - a)
    return {"phases_ms": {k: 1000 * statistics.median(v) for k, v in phases.items()}}


# ------------------------------------------------------------------------------------------------ orchestration
def worker(args) -> None:
    fast = ["data.cache=true", "model.channels_last=true"]
    # fp32 and the article's weights, unless a caller (equal_budget.py, levers.py) runs the project's own defaults
    base = [] if args.base_override == "none" else ["loss.mse_weight=1", "loss.perceptual_weight=1",
                                                    "model.net.base_channels=64", "trainer.precision=32-true"]
    base += args.project_override
    run = {
        "article": lambda: run_article(args),
        "project": lambda: run_project(args, base),
        "project-fast": lambda: run_project(args, base + fast),
        "profile": lambda: run_profile(args, base),
        "profile-fast": lambda: run_profile(args, base + fast),
    }[args.worker]
    print("RESULT " + json.dumps(run()), flush=True)


def spawn(args, name: str, steps: int, eval_root: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--train-root", str(args.train_root), "--steps", str(steps),
           "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--seed", str(args.seed), "--device", args.device, "--warmup", str(args.warmup),
           *(f"--project-override={o}" for o in args.project_override)]
    if eval_root:
        cmd += ["--eval-root", str(eval_root)]
    print(f"[compare] {name}: {steps} steps ...", file=sys.stderr, flush=True)
    result = run_worker(cmd, name)
    print(f"[compare] {name}: done in {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return result


def run_worker(cmd: list[str], name: str) -> dict:
    """Run a benchmark worker subprocess; its ``RESULT {json}`` line, plus ``wall_s``, the subprocess's wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):]) | {"wall_s": time.perf_counter() - t0}


def machine() -> str:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from art_diffusion.run.precision import cpu_bf16_flags

    flags = ", ".join(cpu_bf16_flags()) or "no native bf16"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")  # e.g. AVX512_CORE_BF16: an AMX CPU run as an AVX512-BF16 one
    capped = f", oneDNN capped at ONEDNN_MAX_CPU_ISA={isa}" if isa else ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"CPU {cpu} ({flags}{capped}), {len(os.sched_getaffinity(0))} cores; torch {torch.__version__}; "
            f"GPU {gpu}; Python {platform.python_version()}")


def report(args, results: dict) -> str:
    b, w = args.batch_size, args.window
    speed = {k: statistics.median(windows_images_per_s(results[k]["stamps"], b, args.warmup, w))
             for k in ("article", "project", "project-fast")}
    lines = [
        SECTION, "",
        f"Command: `python benchmarks/compare.py {' '.join(args.argv)}`", "",
        f"Machine: {machine()}.", "",
        f"Settings: {args.image_size} px, batch {b}, {args.workers} data workers, fp32, MSE + VGG16 perceptual "
        f"(weights 1 and 1), Adam 1e-3. Throughput: median images/s over windows of {w} steps after {args.warmup} "
        f"warm-up steps ({args.throughput_steps} steps per pipeline).", "",
        "| pipeline | images/s | vs article | peak RSS (MB) | start-up (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    names = {"article": "article loop (plain PyTorch)", "project": "project, Lightning, same settings",
             "project-fast": "project, fastest CPU config (pixel cache + channels_last)"}
    for key, label in names.items():
        r = results[key]
        lines.append(f"| {label} | {speed[key]:.2f} | {speed[key] / speed['article']:.2f}x | {r['peak_mb']:.0f} | "
                     f"{r['startup_s']:.2f} |")
    lines += ["", "Where a training step's time goes (median ms per step, project components, "
              f"{args.profile_steps} steps):", "",
              "| configuration | " + " | ".join(results["profile"]["phases_ms"]) + " | total |",
              "| --- |" + " --- |" * (len(results["profile"]["phases_ms"]) + 1)]
    for key, label in (("profile", "default"), ("profile-fast", "pixel cache + channels_last")):
        phases = results[key]["phases_ms"]
        lines.append(f"| {label} | " + " | ".join(f"{v:.0f}" for v in phases.values()) +
                     f" | {sum(phases.values()):.0f} |")
    qa, qp = results["quality-article"], results["quality-project"]
    lines += ["", f"Quality at an equal budget: {args.steps} optimizer steps on {args.train_count} training images, "
              f"PSNR/SSIM on {args.eval_count} held-out images ({args.image_size} px); the article's reconstructions "
              "denormalised as its inference step does.", "",
              "| pipeline | PSNR (dB) | SSIM |", "| --- | --- | --- |",
              f"| article | {qa['psnr']:.2f} | {qa['ssim']:.3f} |",
              f"| project | {qp['psnr']:.2f} | {qp['ssim']:.3f} |",
              f"| difference | {qp['psnr'] - qa['psnr']:+.2f} | {qp['ssim'] - qa['ssim']:+.3f} |",
              "", "GPU measurements (item 5 of the benchmark plan): not run here, no GPU was available.", ""]
    return "\n".join(lines)


def write_section(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in old:
        head, _, rest = old.partition(SECTION)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        new = head + text + tail
    else:
        new = old.rstrip() + "\n\n" + text
    path.write_text(new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, help="an ImageFolder; --eval-count images are held out for quality")
    p.add_argument("--eval-root", type=Path, help="a separate evaluation ImageFolder (else split off --root)")
    p.add_argument("--eval-count", type=int, default=200)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=150, help="optimizer steps of the equal-budget quality runs")
    p.add_argument("--throughput-steps", type=int, default=23)
    p.add_argument("--profile-steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--project-override", action="append", default=[],
                   help="a Hydra override for the project's runs, e.g. loss.perceptual_weight=0 (repeatable)")
    p.add_argument("--lpips", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--grid", help=argparse.SUPPRESS)
    p.add_argument("--budget-s", type=float, help=argparse.SUPPRESS)
    p.add_argument("--base-override", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--write", type=Path, nargs="?", const=REPO / "BENCHMARKS.md", help="update this markdown file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--train-root", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    args.argv = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        if args.eval_root:
            args.train_root = args.root
        else:
            args.train_root, args.eval_root = split_folder(args.root, args.eval_count, args.seed, Path(tmp))
        args.train_count = sum(1 for p in args.train_root.glob("*/*"))
        args.eval_count = sum(1 for p in args.eval_root.glob("*/*"))
        results = {}
        for name in ("article", "project", "project-fast"):
            results[name] = spawn(args, name, args.throughput_steps, None)
        for name in ("profile", "profile-fast"):
            results[name] = spawn(args, name, args.profile_steps, None)
        results["quality-article"] = spawn(args, "article", args.steps, args.eval_root)
        results["quality-project"] = spawn(args, "project", args.steps, args.eval_root)
    text = report(args, results)
    print(text)
    if args.write:
        write_section(text, args.write)


if __name__ == "__main__":
    main()
