"""The cost of a conditional DDPM's sample grids per validation epoch: every class vs callbacks.samples.max_classes.

Builds the model of ``python scripts/train.py experiment=ddpm_cpu32`` (its small UNet at 32 px, 60 classes) and
its SampleLogger (conf/callbacks/diffusion.yaml), then times the grids one validation epoch logs, with
``max_classes=null`` (every class: the old behaviour) and the default cap, interleaved A/B, and prints a table.

    PYTHONPATH=src python benchmarks/sample_grids.py [--classes 60] [--repeats 3] [--experiment ddpm_cpu32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers.config import compose_train_cfg  # noqa: E402  (the real config, composed as the tests do)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--experiment", default="ddpm_cpu32")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = compose_train_cfg(Path("/tmp/sample_grids_unused"), f"experiment={args.experiment}",
                            f"model.num_classes={args.classes}", tiny=False)
    module = instantiate(cfg.model)
    module.eval()
    module.class_names = [f"class_{i:02d}" for i in range(args.classes)]
    loggers = {"every class (max_classes=null)": instantiate(cfg.callbacks.samples, max_classes=None),
               f"capped (max_classes={cfg.callbacks.samples.max_classes})": instantiate(cfg.callbacks.samples)}

    class Trainer:  # the one attribute make_grids reads
        current_epoch = 0

    times: dict[str, list[float]] = {name: [] for name in loggers}
    grids: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, logger in loggers.items():  # interleaved, so load from other jobs hits both alike
            start = time.perf_counter()
            grids[name] = len(logger.make_grids(Trainer(), module))
            times[name].append(time.perf_counter() - start)
    print(f"experiment={args.experiment}, {args.classes} classes, {cfg.data.image_size} px, "
          f"{cfg.callbacks.samples.num_images} images per "
          f"grid, {cfg.callbacks.samples.sampler} {cfg.callbacks.samples.steps} steps; CPU threads: "
          f"{torch.get_num_threads()}")
    print(f"| grids per validation epoch | grids | seconds (median of {args.repeats}) |")
    print("| --- | ---: | ---: |")
    for name in loggers:
        print(f"| {name} | {grids[name]} | {statistics.median(times[name]):.1f} |")


if __name__ == "__main__":
    main()
