"""The article's network alone, forward + backward, under each CPU memory setting and torch.compile. Prints a table.

    python benchmarks/network_step.py --repeats 2

Each variant runs in its own subprocess (``cpu_memory`` cannot be undone in a process): the ConvDiffusionModel
(base 64), batch 32, 128 px, bf16 autocast, channels_last, a fixed random input and output gradient; seconds per
forward + backward, median over ``--steps`` steps after 3 warm-up steps (compilation included in the warm-up).
``--repeats 2`` interleaves the variants (A B C A B C); the "fused" process also alternates its steps with
the same network's PyTorch ops, the tightest A/B of fusing. With ``--ops`` each variant also prints its 8 most
expensive aten operators (torch.profiler, self CPU time per step): where the elementwise passes (BatchNorm, ReLU,
max-pooling and the zero-fill of its backward) stand against the convolutions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402  (benchmarks/ is not a package)

VARIANTS = {  # name: (what it is, cpu_memory, compile); only "fused" runs the fused blocks
    "release": ("glibc's defaults (cpu_memory=release, the previous default)", "release", False),
    "reuse": ("freed memory reused (cpu_memory=reuse), PyTorch's elementwise ops", "reuse", False),
    "reuse-compile": ("reuse + torch.compile (inductor) of the network", "reuse", True),
    "fused": ("reuse + fused ReLU/BatchNorm/max-pool (model.net.fused=true, the default)", "reuse", False),
}


def worker(args) -> None:
    import torch

    from art_diffusion.nets.conv_diffusion import ConvDiffusionModel
    from art_diffusion.run.memory import apply_cpu_memory

    _, memory, compiled = VARIANTS[args.worker]
    apply_cpu_memory(memory)
    torch.manual_seed(0)
    net = ConvDiffusionModel(fused=args.worker == "fused").to(memory_format=torch.channels_last)
    if compiled:
        net = torch.compile(net)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
        y.backward(grad.to(y.dtype))

    # "fused" alternates its steps with the same net's PyTorch ops (the blocks' switch), in this one process: the
    # A/B that the VM's changing speed cannot land on one side only
    from art_diffusion.nets.fused_blocks import FusedBlock

    blocks = [m for m in net.modules() if isinstance(m, FusedBlock)] if args.worker == "fused" else []
    for _ in range(3):
        step()
    times, unfused = [], []
    for i in range(args.steps * (2 if blocks else 1)):
        off = bool(blocks) and i % 2 == 1
        for block in blocks:
            block.fused = not off
        start = time.perf_counter()
        step()
        (unfused if off else times).append(time.perf_counter() - start)
    for block in blocks:
        block.fused = True
    result = {"times": times, "unfused_times": unfused, "ops": []}
    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        result["ops"] = [(e.key, e.self_cpu_time_total / 2e3) for e in events if e.key.startswith("aten::")][:8]
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", nargs="*", choices=list(VARIANTS))
    p.add_argument("--ops", action="store_true", help="also the 8 most expensive aten operators of each variant")
    p.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    names = args.only or list(VARIANTS)
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for name in names:
            cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--image-size",
                   str(args.image_size), "--batch-size", str(args.batch_size), *(["--ops"] if args.ops else [])]
            runs.setdefault(name, []).append(compare.run_worker(cmd, name))
    median = {n: statistics.median(t for r in rs for t in r["times"]) for n, rs in runs.items()}
    lines = [f"Command: `python benchmarks/network_step.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {compare.machine()}.", "",
             f"ConvDiffusionModel (base 64), batch {args.batch_size}, {args.image_size} px, bf16 autocast, "
             f"channels_last; forward + backward, median of {args.steps} steps x {args.repeats} interleaved pass(es).",
             "", "| variant | s per forward + backward | vs release |", "| --- | --- | --- |"]
    lines += [f"| {VARIANTS[n][0]} | {median[n]:.3f} | {median['release'] / median[n]:.2f}x |" if "release" in median
              else f"| {VARIANTS[n][0]} | {median[n]:.3f} | |" for n in names]
    if "fused" in runs:
        off = statistics.median(t for r in runs["fused"] for t in r["unfused_times"])
        lines += ["", "In the \"fused\" process, its steps alternating with PyTorch's ops (the blocks switched step "
                  f"by step): fused {median['fused']:.3f} s, PyTorch's ops {off:.3f} s per forward + backward: "
                  f"**{off / median['fused']:.2f}x**."]
    for name in names if args.ops else []:
        lines += ["", f"Most expensive operators, {VARIANTS[name][0]} (ms per step, self time, first pass):", "",
                  "| operator | ms |", "| --- | --- |"]
        lines += [f"| `{op}` | {ms:.0f} |" for op, ms in runs[name][0]["ops"]]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
