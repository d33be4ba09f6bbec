"""Data-loading throughput and start-up: the article's pipeline against this project's, uncached and cached.

    python benchmarks/data_throughput.py --root ../shared/data/art-dev

(a) article: torchvision ImageFolder + Resize((128, 128)) + ToTensor + Normalize(ImageNet), with the article's
    serial ``is_valid_image`` scan (open + verify every file) before training;
(b) ArtDataModule with data.cache=false: JPEG draft-mode decoding, headers checked in parallel and remembered;
(c) ArtDataModule with data.cache=true: the epoch reads the memory-mapped pixel cache.

Every epoch is timed in this one process (num_workers=0), so "images per CPU-second" is images/s per core and
does not depend on how busy the other cores of a shared machine are; wall-clock images/s is printed too. The
pipelines take turns pass after pass and medians are reported. Start-up: "first run" has no cache of ours
(a fresh cache directory), "second run" reuses it; the article has no cache, so both are its scan.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import PIL
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from art_diffusion.data import ArtDataModule


def is_valid_image(path):  # the article's check, verbatim
    try:
        Image.open(path).verify()
        return True
    except:  # noqa: E722
        return False


def article_setup(root: str, size: int) -> datasets.ImageFolder:
    transform = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    return datasets.ImageFolder(root, transform=transform, is_valid_file=is_valid_image)


def ours_setup(root: str, size: int, cache: bool, cache_dir: str, batch_size: int) -> ArtDataModule:
    dm = ArtDataModule(root, image_size=size, batch_size=batch_size, num_workers=None, cache=cache,
                       cache_dir=cache_dir, val_fraction=0, test_fraction=0)
    dm.setup()
    dm.hparams.num_workers = 0  # the pool above may use every core; the epochs are timed in one process
    return dm


def timed(fn) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def epoch(loader: DataLoader) -> int:
    return sum(len(batch[0]) for batch in loader)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {cores} cores (load average {load}), Python {platform.python_version()}, "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}")


def drop_page_cache() -> None:
    """Evict file contents and inodes from memory, so the next reads come from the disk, as on a first visit."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"--cold needs root on Linux to write /proc/sys/vm/drop_caches ({exc}).") from None


def cold_startup(args) -> None:
    """Second-run start-up with nothing in the page cache: the article's scan reads every file again, ours only
    directory entries and inodes (its header verdicts and pixel cache are on disk from the first run)."""
    times: dict[str, list[float]] = {"article": [], "uncached": [], "cached": []}
    with tempfile.TemporaryDirectory(prefix="data-throughput-") as tmp:
        ours_setup(args.root, args.image_size, True, tmp, args.batch_size)
        ours_setup(args.root, args.image_size, False, tmp, args.batch_size)
        for p in range(args.passes):
            drop_page_cache()
            times["article"].append(timed(lambda: article_setup(args.root, args.image_size))[1])
            for name, cache in (("uncached", False), ("cached", True)):
                drop_page_cache()
                setup = timed(lambda: ours_setup(args.root, args.image_size, cache, tmp, args.batch_size))
                times[name].append(setup[1])
            print(f"pass {p + 1}/{args.passes} done", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nroot={Path(args.root).resolve()}  passes={args.passes} (medians), page cache dropped before each start")
    print(f"machine: {machine()}\n")
    print("| pipeline | start-up, cold page cache (s) | vs article scan |\n|---|---|---|")
    for name, label in (("article", "(a) article: is_valid_image scan"), ("uncached", "(b) ours, 2nd run, cache=false"),
                        ("cached", "(c) ours, 2nd run, cache=true")):
        print(f"| {label} | {med[name]:.3f} | {med[name] / med['article']:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="an ImageFolder, e.g. ../shared/data/art-dev")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=5, help="timed passes per pipeline; medians are reported")
    parser.add_argument("--cold", action="store_true",
                        help="start-up only, each measured after dropping the OS page cache (root, Linux)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.cold:
        return cold_startup(args)
    torch.set_num_threads(1)  # one core per pipeline: the per-core comparison the targets are stated in
    size, bs = args.image_size, args.batch_size

    rows: dict[str, dict[str, list[float]]] = {k: {} for k in ("article", "uncached", "cached")}

    def add(name: str, key: str, value: float) -> None:
        rows[name].setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="data-throughput-") as tmp:
        warm = os.path.join(tmp, "warm")
        ours_setup(args.root, size, True, warm, bs)  # the caches the "second run" rows reuse
        ours_setup(args.root, size, False, warm, bs)
        for p in range(args.passes):
            article, wall, _ = timed(lambda: article_setup(args.root, size))
            add("article", "start1", wall), add("article", "start2", wall)
            loader = DataLoader(article, batch_size=bs, shuffle=True, num_workers=0)
            n, wall, cpu = timed(lambda: epoch(loader))
            add("article", "n", n), add("article", "ips", n / wall), add("article", "ipcpu", n / cpu)

            for name, cache in (("uncached", False), ("cached", True)):
                fresh = os.path.join(tmp, f"fresh-{name}-{p}")
                _, wall, _ = timed(lambda: ours_setup(args.root, size, cache, fresh, bs))
                add(name, "start1", wall)
                dm, wall, _ = timed(lambda: ours_setup(args.root, size, cache, warm, bs))
                add(name, "start2", wall)
                loader = dm.train_dataloader()
                n, wall, cpu = timed(lambda: epoch(loader))
                add(name, "n", n), add(name, "ips", n / wall), add(name, "ipcpu", n / cpu)
            print(f"pass {p + 1}/{args.passes} done", flush=True)

    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in rows.items()}
    base = med["article"]
    print(f"\nroot={Path(args.root).resolve()}  image_size={size}  batch_size={bs}  passes={args.passes} (medians)")
    print(f"machine: {machine()}\n")
    header = ("pipeline", "images/epoch", "start-up 1st run s", "start-up 2nd run s", "2nd start / article scan",
              "images/s", "images/CPU-s (per core)", "per core vs article")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    labels = {"article": "(a) article: ImageFolder + is_valid_image scan", "uncached": "(b) ours, data.cache=false",
              "cached": "(c) ours, data.cache=true"}
    for name, m in med.items():
        print(f"| {labels[name]} | {m['n']:.0f} | {m['start1']:.2f} | {m['start2']:.3f} | "
              f"{m['start2'] / base['start1']:.1%} | {m['ips']:.0f} | {m['ipcpu']:.0f} | "
              f"{m['ipcpu'] / base['ipcpu']:.1f}x |")


if __name__ == "__main__":
    main()
