"""Where one training step's time goes, two configurations side by side in one run. Prints a table.

    python benchmarks/step_profile.py --root ../shared/data/art-dev --steps 8 --warmup 2 --repeats 2

Each configuration runs in its own subprocess on the project's components composed from conf/ (``--before``
overrides, by default the defaults before issue 25: ``cpu_memory=release data.feature_store=false
model.net.fused=false``, and ``--after`` overrides, by default none: today's default), 128 px, batch 32, in the
precision ``trainer.precision=auto`` resolves to. A hand-written step times each phase with the clock read between
them (a CPU runs them in order; on a GPU the script synchronises first):

* data: the next batch from the real train DataLoader (pixel cache, stored target features when on);
* network forward, network backward: the ConvDiffusionModel;
* VGG on target: the no-grad VGG pass over the target (0 when the batch brings its stored features);
* VGG on output (fwd) / (bwd): the loss on a detached copy of the output, then its backward to that copy (so the
  VGG's backward is timed apart from the network's, with the same arithmetic as one ``loss.backward()``);
* optimizer: ``zero_grad`` + Adam's step;
* Lightning + logging: the same number of steps through a real ``Trainer.fit`` (``self.log`` of the loss parts,
  the loop, the hooks) timed per step, minus the sum of the phases above.

``--repeats 2`` runs before/after/before/after and reports each phase's median over the steps of both passes.
On a shared machine the separate runs see different loads (and this VM's speed moves by 2x for runs of a few
steps); so the hand-written loop of "after" switches the levers one process can switch, step by step: stored or
computed targets (with the target-feature store on) and the fused blocks or PyTorch's ReLU/BatchNorm/max-pool ops
(with ``model.net.fused`` on). The second table is that tighter A/B.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402  (benchmarks/ is not a package)

PHASES = ("data", "network forward", "VGG on target", "VGG on output (fwd)", "VGG on output (bwd)",
          "network backward", "optimizer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(args, overrides: list[str]) -> dict:
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import TensorBoardLogger

    from art_diffusion.nets.fused_blocks import FusedBlock
    from art_diffusion.run.memory import apply_cpu_memory
    from art_diffusion.run.precision import resolve_trainer_precision

    cfg = compare.compose(args, overrides)
    resolve_trainer_precision(cfg)
    apply_cpu_memory(cfg.cpu_memory)  # as train() does
    L.seed_everything(args.seed, verbose=False)
    precision = str(cfg.trainer.precision)
    datamodule, module = instantiate(cfg.data), instantiate(cfg.model)
    timer = compare.StepTimer()
    with tempfile.TemporaryDirectory() as logdir:
        # a real fit first: it builds what setup builds (the feature store), and times whole Lightning steps
        trainer = L.Trainer(accelerator=args.device, devices=1, precision=precision, max_steps=args.steps,
                            limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, logger=TensorBoardLogger(logdir),
                            callbacks=[timer], log_every_n_steps=10)
        trainer.fit(module, datamodule=datamodule)
    stamps = timer.stamps[args.warmup + 1:]
    lightning_step = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    device = module.device
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision.startswith("bf16") \
        else contextlib.nullcontext
    loss, optimizer = module.loss, trainer.optimizers[0]
    module.train()
    # The levers one process can switch step by step, for the tight A/B: stored or computed targets (when the store
    # is on) and fused or PyTorch's elementwise ops (when model.net.fused is on). Each combination gets
    # args.steps steps, in turn.
    fused_blocks = [m for m in module.modules() if isinstance(m, FusedBlock) and m.fused]
    variants = [(store, fused) for fused in ((True, False) if fused_blocks else (False,))
                for store in ((True, False) if datamodule.feature_path is not None else (False,))]
    times = {variant: {phase: [] for phase in PHASES} for variant in variants}
    loader = iter(datamodule.train_dataloader())
    for step in range(args.steps * len(variants)):
        use_store, use_fused = variants[step % len(variants)]
        for block in fused_blocks:
            block.fused = use_fused
        _sync(device)
        t = [time.perf_counter()]
        try:
            batch = next(loader)
        except StopIteration:
            loader = iter(datamodule.train_dataloader())
            batch = next(loader)
        images, _, *stored = datamodule.on_before_batch_transfer(batch, 0)
        images = images.to(device)
        stored = stored[0].to(device) if stored and use_store else None
        t.append(time.perf_counter())
        with autocast():
            out = module(images)
        _sync(device)
        t.append(time.perf_counter())
        with autocast():
            target_n = loss.normalize(images)
            target_features = stored if stored is not None else loss.perceptual.target_features(target_n)
        _sync(device)
        t.append(time.perf_counter())
        out_d = out.detach().requires_grad_()
        with autocast():
            total = loss(out_d, images, target_features)["loss"]
        _sync(device)
        t.append(time.perf_counter())
        total.backward()
        _sync(device)
        t.append(time.perf_counter())
        out.backward(out_d.grad)
        _sync(device)
        t.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t.append(time.perf_counter())
        if step >= args.warmup * len(variants):
            for phase, a, b in zip(PHASES, t, t[1:]):
                times[(use_store, use_fused)][phase].append(b - a)
    named = {_variant_name(store, fused, bool(fused_blocks)): {k: statistics.median(v) for k, v in phases.items()}
             for (store, fused), phases in times.items()}
    return {"phases_s": next(iter(named.values())), "variants_s": named, "lightning_step_s": lightning_step,
            "precision": precision}


def _variant_name(store: bool, fused: bool, can_fuse: bool) -> str:
    return ("stored targets" if store else "computed targets") + (("" if fused else ", PyTorch's ops") if can_fuse
                                                                  else "")


def spawn(args, name: str, overrides: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--train-root", str(args.train_root), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--seed", str(args.seed), "--device", args.device,
           "--cache-dir", str(args.cache_dir), *(f"--override={o}" for o in overrides)]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = compare.run_worker(cmd, name) | {"load": load.split("load average:")[-1].strip()}
    print(f"[step_profile] {name}: {result['wall_s']:.0f} s, load {result['load']}", file=sys.stderr, flush=True)
    return result


def report(args, runs: dict[str, list[dict]]) -> str:
    names = list(runs)
    med = {n: {p: statistics.median(r["phases_s"][p] for r in runs[n]) for p in PHASES} for n in names}
    step = {n: statistics.median(r["lightning_step_s"] for r in runs[n]) for n in names}
    lines = [f"Command: `python benchmarks/step_profile.py {' '.join(args.argv)}`", "",
             f"Machine: {compare.machine()}.", "",
             f"{args.image_size} px, batch {args.batch_size}, {args.workers} data workers, precision "
             f"{runs[names[-1]][0]['precision']}; median over {args.steps - args.warmup} steps after {args.warmup} "
             f"warm-up, {args.repeats} interleaved pass(es); load averages at the start of each run: "
             + "; ".join(f"{n} {r['load']}" for n in names for r in runs[n]) + ".", "",
             "| phase | " + " | ".join(f"{n} (ms) | share" for n in names) + " |",
             "| --- |" + " --- | --- |" * len(names)]
    rows = [*PHASES, "Lightning + logging"]
    for phase in rows:
        cells = []
        for n in names:
            value = med[n][phase] if phase in PHASES else step[n] - sum(med[n].values())
            cells.append(f"{1000 * value:.0f} | {100 * value / step[n]:.0f} %")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("| **step (real Trainer)** | " + " | ".join(f"**{1000 * step[n]:.0f}** | 100 %" for n in names) + " |")
    lines.append("| images/s | " + " | ".join(f"{args.batch_size / step[n]:.2f} | {step[names[0]] / step[n]:.2f}x"
                                                for n in names) + " |")
    alternating = [r for r in runs.get("after", []) if len(r.get("variants_s", {})) > 1]
    if alternating:
        variants = list(alternating[0]["variants_s"])
        lines += ["", "The hand-written loop of \"after\", its levers switched step by step in one process "
                  f"({args.steps} steps each, in turn; ms):", "", "| phase | " + " | ".join(variants) + " |",
                  "| --- |" + " --- |" * len(variants)]
        sums = dict.fromkeys(variants, 0.0)
        for phase in PHASES:
            cells = []
            for v in variants:
                value = statistics.median(r["variants_s"][v][phase] for r in alternating)
                sums[v] += value
                cells.append(f"{1000 * value:.0f}")
            lines.append(f"| {phase} | " + " | ".join(cells) + " |")
        lines.append("| **sum** | " + " | ".join(f"**{1000 * sums[v]:.0f}**" for v in variants) + " |")
        lines.append("| vs the first column | " + " | ".join(f"{sums[variants[0]] / sums[v]:.2f}x" for v in variants)
                     + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_run_arguments(p, steps=8, warmup=2)
    p.add_argument("--before", nargs="*",
                   default=["cpu_memory=release", "data.feature_store=false", "model.net.fused=false"],
                   help="overrides of the baseline configuration")
    p.add_argument("--after", nargs="*", default=[], help="overrides of the other one")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(profile(args, args.override)), flush=True)
        return
    args.argv = sys.argv[1:]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        args.train_root, _ = compare.split_folder(args.root, 0, args.seed, Path(tmp))
        args.cache_dir = Path(tmp) / "cache"
        for _ in range(args.repeats):
            for name, overrides in (("before", args.before), ("after", args.after)):
                runs.setdefault(name, []).append(spawn(args, name, overrides))
    print(report(args, runs))


if __name__ == "__main__":
    main()
