"""The README's first run, timed as a user runs it: `python scripts/train.py experiment=demo`, fresh data and caches.

    python benchmarks/demo_time.py --repeats 1
    python benchmarks/demo_time.py --candidate "data.image_size=48 trainer.max_epochs=16 scheduler.step_size=12"
    python benchmarks/demo_time.py --seeds 0 1 2 3 --candidate "data.batch_size=8" --candidate "trainer.max_epochs=12"

Each run is the whole command in a subprocess (data generation, cache builds, training with validation and grids,
the test of best.ckpt) with an empty data directory and an empty ``ART_DIFFUSION_CACHE`` (the VGG16 weights file of
this machine's cache is copied in, as a machine that ran anything before has it; resolving it from the network is
not timed). Each ``--candidate`` adds a configuration, run interleaved with the demo (A B A B ...); ``--seeds`` runs
every configuration with each seed (the seed moves the demo's PSNR by about 2 dB, so one seed cannot tell two
settings apart). Prints wall time, val/psnr and test/psnr of each run with the load average when it started (a shared
machine makes wall times noisy), then per configuration the median wall time and the mean and lowest val/psnr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402  (benchmarks/ is not a package)


def run(name: str, overrides: list[str], tmp: Path) -> dict:
    root = tmp / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "cache").mkdir(parents=True)
    from art_diffusion.storage import cache_dir

    weights = cache_dir() / "vgg16_imagenet_features16.pt"
    if weights.exists():
        shutil.copy(weights, root / "cache" / weights.name)
    env = {**os.environ, "ART_DIFFUSION_CACHE": str(root / "cache")}
    load = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "experiment=demo",
                           f"paths.data_dir={root / 'data'}", f"hydra.run.dir={root / 'run'}", *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    result = {"wall_s": wall, "val_psnr": metrics["val/psnr"], "test_psnr": metrics.get("test/psnr", float("nan")),
              "load": ", ".join(f"{x:.2f}" for x in load)}
    print(f"[demo_time] {name}: {wall:.1f} s, val/psnr {result['val_psnr']:.2f}, load {result['load']}",
          file=sys.stderr, flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", action="append", default=[],
                   help="overrides of a further configuration, space-separated (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[None],
                   help="seeds each configuration runs with (default: the config's)")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    config_seed = OmegaConf.load(REPO / "conf" / "train.yaml").seed  # what a run without seed= uses
    configs = {"demo": [], **{f"demo {c}": c.split() for c in args.candidate}}
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for seed in args.seeds:
                for i, (name, overrides) in enumerate(configs.items()):
                    seeded = [*overrides, f"seed={seed}"] if seed is not None else overrides
                    result = run(f"config{i}", seeded, Path(tmp))
                    runs.setdefault(name, []).append({**result, "seed": config_seed if seed is None else seed})
    lines = [f"Command: `python benchmarks/demo_time.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {compare.machine()}.", "",
             "| configuration | seed | wall (s) | val/psnr (dB) | test/psnr (dB) | load average at start |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, results in runs.items():
        for r in results:
            lines.append(f"| `{name}` | {r['seed']} | {r['wall_s']:.1f} | {r['val_psnr']:.2f} | {r['test_psnr']:.2f} "
                         f"| {r['load']} |")
    lines += ["", "| configuration | runs | median wall (s) | mean val/psnr (dB) | lowest val/psnr (dB) |",
              "| --- | --- | --- | --- | --- |"]
    for name, results in runs.items():
        psnr = [r["val_psnr"] for r in results]
        lines.append(f"| `{name}` | {len(results)} | {statistics.median(r['wall_s'] for r in results):.1f} "
                     f"| {statistics.mean(psnr):.2f} | {min(psnr):.2f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
