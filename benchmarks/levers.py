"""Every speed lever of CPU training, one at a time, as a ratio to the article's loop, side by side in one run.

    python benchmarks/levers.py --root ../shared/data/art-dev --steps 11 --warmup 3 --repeats 2

Each configuration trains in its own subprocess (benchmarks/compare.py's workers: the article's plain-PyTorch loop,
or the project's Lightning training composed from conf/ with overrides) for ``--steps`` steps at 128 px, batch 32;
images/s is the median over windows of ``--window`` steps after ``--warmup`` steps. ``--repeats 2`` runs the whole
list twice, interleaved (A B C ... A B C ...), and reports each configuration's median over its windows of both
passes, so a slow minute of a shared machine does not land on one configuration only. Prints a markdown table.

On a CPU with AMX, ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/levers.py ...`` runs every
configuration (the article's loop too) with oneDNN limited to AVX512-BF16, the instruction set of CPUs without AMX
(AMD EPYC Zen 4); the table's machine line says so.

Levers that are not config keys are applied by the benchmark worker itself:
  * ``vgg-nchw``: the loss's VGG weights put back in NCHW after setup (the project converts them to NHWC with
    model.channels_last, so this isolates what the VGG's layout is worth);
  * ``vgg-one-pass``: one VGG forward over output and target concatenated instead of two (a no-grad pass for the
    target and a pass for the output), as some perceptual-loss codebases do;
  * ``compile-loss``: the loss's VGG16 slice under ``torch.compile`` (inductor), the network eager;
  * ``threads-1``: ``torch.set_num_threads(1)`` in the training process (the default uses every core).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402  (benchmarks/ is not a package)

RELEASE = ["cpu_memory=release"]  # glibc's malloc defaults: the rows before the allocator lever
NO_STORE = ["data.feature_store=false"]  # the target's VGG features computed every step: the rows before the store
UNFUSED = ["model.net.fused=false"]  # PyTorch's ReLU, BatchNorm and max-pool ops: the rows before fusing
OLD_DEFAULT = ["trainer.precision=32-true", "model.channels_last=false", "data.cache=false", *RELEASE, *UNFUSED]
#: (name, what it is, overrides on top of the project's config, worker-side patches). Rows up to "default" add one
#: lever each to the row above; the rows after it change one thing of the default.
CONFIGS: list[tuple[str, str, list[str], list[str]]] = [
    ("article", "article loop: plain PyTorch, fp32, NCHW, ImageFolder decoding", [], []),
    ("old-default", "project, first defaults: fp32, NCHW, decoding", OLD_DEFAULT, []),
    ("bf16", "+ bf16 autocast",
     ["trainer.precision=bf16-mixed", "model.channels_last=false", "data.cache=false", *RELEASE, *UNFUSED], []),
    ("bf16-cl-net", "+ channels_last network (VGG in NCHW)",
     ["trainer.precision=bf16-mixed", "data.cache=false", *RELEASE, *UNFUSED], ["vgg-nchw"]),
    ("bf16-cl", "+ channels_last VGG", ["trainer.precision=bf16-mixed", "data.cache=false", *RELEASE, *UNFUSED], []),
    ("cache", "+ pixel cache (the defaults of issue 24)", [*RELEASE, *NO_STORE, *UNFUSED], []),
    ("reuse", "+ freed CPU memory reused (cpu_memory=reuse)", [*NO_STORE, *UNFUSED], []),
    ("store", "+ target-feature store (data.feature_store=auto)", UNFUSED, []),
    ("default", "+ fused ReLU/BatchNorm/max-pool (model.net.fused=true) = **the default**", [], []),
    ("workers-0", "default, 0 data workers", ["data.num_workers=0"], []),
    ("workers-1", "default, 1 data worker", ["data.num_workers=1"], []),
    ("one-pass", "default without the store, one VGG pass over output and target", NO_STORE, ["vgg-one-pass"]),
    ("compile", "default + torch.compile (inductor) of the network (its own code, not the fused kernels)",
     ["model.compile=true"], []),
    ("compile-loss", "default + torch.compile (inductor) of the loss's VGG", [], ["compile-loss"]),
    ("threads-1", "default, 1 intra-op thread (torch.set_num_threads(1))", [], ["threads-1"]),
    ("fp32-cl-cache", "default in fp32 (trainer.precision=32-true)", ["trainer.precision=32-true"], []),
    ("bf16-default", "default in bf16 autocast (trainer.precision=bf16-mixed)", ["trainer.precision=bf16-mixed"], []),
]


def vgg_patches(patches: list[str]) -> list:
    """Worker-side levers: Lightning callbacks applied once the module is set up."""
    import lightning as L

    from art_diffusion.losses.perceptual import PerceptualLoss

    if "vgg-one-pass" in patches:
        def one_pass(self, output, target, target_features=None):
            if self.vgg is None:
                self.build(output.device)
            out_features, target_features = self.vgg(torch.cat([output, target.detach()])).chunk(2)
            return out_features, target_features.detach()

        PerceptualLoss._features = one_pass

    class VggNchw(L.Callback):
        def on_fit_start(self, trainer, module):
            module.loss.perceptual.to(memory_format=torch.contiguous_format)

    class CompileLoss(L.Callback):
        def on_fit_start(self, trainer, module):
            perceptual = module.loss.perceptual
            if perceptual.vgg is None:
                perceptual.build(module.device)
            perceptual.vgg = torch.compile(perceptual.vgg)

    if "threads-1" in patches:
        torch.set_num_threads(1)
    return [*([VggNchw()] if "vgg-nchw" in patches else []), *([CompileLoss()] if "compile-loss" in patches else [])]


def worker(args) -> None:
    if args.worker == "article":
        result = compare.run_article(args)
    else:
        result = compare.run_project(args, args.project_override, vgg_patches(args.patch))
    print("RESULT " + json.dumps(result), flush=True)


def spawn(args, name: str, overrides: list[str], patches: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", "article" if name == "article" else "project",
           "--train-root", str(args.train_root), "--steps", str(args.steps), "--image-size", str(args.image_size),
           "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--seed", str(args.seed),
           "--device", args.device, "--cache-dir", str(args.cache_dir), *(f"--project-override={o}" for o in overrides),
           *(f"--patch={p}" for p in patches)]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load average:")[-1].strip()
    result = compare.run_worker(cmd, name) | {"load": load}  # the machine's load when the run started
    print(f"[levers] {name}: {result['wall_s']:.0f} s, load {load}", file=sys.stderr, flush=True)
    return result


def report(args, runs: dict[str, list[dict]]) -> str:
    speed = {name: statistics.median(w for r in rs for w in compare.windows_images_per_s(
        r["stamps"], args.batch_size, args.warmup, args.window)) for name, rs in runs.items()}
    lines = [f"Command: `python benchmarks/levers.py {' '.join(args.argv)}`", "",
             f"Machine: {compare.machine()}.", "",
             f"{args.image_size} px, batch {args.batch_size}, {args.workers} data workers unless stated; "
             f"images/s: median over windows of {args.window} steps after {args.warmup} warm-up steps, "
             f"{args.repeats} interleaved pass(es) of {args.steps} steps per configuration.", "",
             "| configuration | precision | images/s | vs article | vs default | start-up + first step (s) "
             "| load averages |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, label, _, _ in CONFIGS:
        if name not in runs:
            continue
        first = statistics.median(r["startup_s"] + r["stamps"][1] - r["stamps"][0] for r in runs[name])
        precision = runs[name][0].get("precision", "32-true (article)")
        load = "; ".join(r["load"] for r in runs[name])
        lines.append(f"| {label} | {precision} | {speed[name]:.2f} | {speed[name] / speed['article']:.2f}x | "
                     f"{speed[name] / speed['default']:.2f}x | {first:.1f} | {load} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_run_arguments(p, steps=11, warmup=3, window=4)
    p.add_argument("--only", nargs="*", help="a subset of the configurations (article and default always run)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--project-override", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--patch", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    args.eval_root = None
    if args.worker:
        return worker(args)
    args.argv = sys.argv[1:]
    wanted = [c for c in CONFIGS if not args.only or c[0] in {"article", "default", *args.only}]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        args.train_root, _ = compare.split_folder(args.root, 0, args.seed, Path(tmp))
        args.cache_dir = Path(tmp) / "cache"  # this invocation's pixel cache and feature store, removed with it
        for _ in range(args.repeats):
            for name, _, overrides, patches in wanted:
                runs.setdefault(name, []).append(spawn(args, name, overrides, patches))
    print(report(args, runs))


if __name__ == "__main__":
    main()
