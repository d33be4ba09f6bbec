"""What checking weights read from a file costs: a DDPM's checkpoint and its exported model.safetensors, loaded the
way the project loaded them before and with the checks every loader now makes, interleaved round by round in one
process: a checkpoint with torch.load alone against load_checkpoint (the zip's CRC-32s, check_tensors); an exported
folder's weights as read_net read them (the net built, load_file, load_state_dict) against read_net now (the sha256
config.json records, check_tensors, check_state_dict's dtype kinds). The file is in the page cache after the first
round (a warm load: the checks' worst case, as a cold load waits on the disk for both); ``--cold`` evicts the file's
pages before each call (``posix_fadvise(DONTNEED)``: this file's pages only, nothing else of the machine's cache).

    python benchmarks/weight_checks.py                       # the DDPM nets of experiment=ddpm_cpu32 and ddpm_gpu64
    python benchmarks/weight_checks.py --presets ddpm_cpu32 --rounds 9
    python benchmarks/weight_checks.py --cold     # each load from the disk: the file's pages evicted before each call

A checkpoint holds what training writes for a DDPM: the net, its EMA, Adam's two moments per parameter.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from art_diffusion.checkpoints.loading import _bad_zip_member, _tensors, check_tensors, load_checkpoint
from art_diffusion.nets import UNet
from art_diffusion.pretrained.folder import SHA256_KEY, _sha256, read_net, write_weights

#: the UNet of each preset (conf/experiment/<preset>.yaml)
PRESETS = {
    "ddpm_cpu32": {"base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 2,
                   "attention_resolutions": [8], "image_size": 32},
    "ddpm_gpu64": {"base_channels": 128, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 2,
                   "attention_resolutions": [16], "image_size": 64},
}


def write_checkpoint(net: torch.nn.Module, path: Path) -> None:
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state |= {f"ema.average.{k}": v.clone() for k, v in net.state_dict().items()}
    state["ema.num_updates"] = torch.tensor(1000)
    adam = {i: {"step": torch.tensor(1000.0), "exp_avg": torch.randn_like(p) * 1e-3,
                "exp_avg_sq": torch.rand_like(p) * 1e-6} for i, p in enumerate(net.parameters())}
    torch.save({"epoch": 10, "global_step": 1000, "state_dict": state,
                "optimizer_states": [{"state": adam, "param_groups": [{"lr": 2e-4, "params": list(adam)}]}]}, path)


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn, cold: Path | None) -> float:
    if cold is not None:
        evict(cold)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cold", action="store_true", help="evict the file from the page cache before each call")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}, {torch.get_num_threads()} torch threads; median of {args.rounds} interleaved rounds (ms), "
          f"{'cold (file evicted before each call)' if args.cold else 'warm (file in the page cache)'}\n")
    print("| preset | file | MB | before | after | after / before | of which: checksum | check_tensors |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        net = UNet(**PRESETS[preset])
        with tempfile.TemporaryDirectory() as tmp:
            ckpt, weights = Path(tmp) / "last.ckpt", Path(tmp) / "model.safetensors"
            write_checkpoint(net, ckpt)
            config = {"net": {"_target_": "art_diffusion.nets.UNet", **PRESETS[preset]},
                      SHA256_KEY: write_weights(net, weights)}
            loaded = torch.load(ckpt, weights_only=True)
            state_items = {k: v for name in ("state_dict", "optimizer_states") for k, v in _tensors(loaded[name], name)}
            cases = {
                "ckpt before": lambda: torch.load(ckpt, map_location="cpu", weights_only=True),
                "ckpt after": lambda: load_checkpoint(ckpt),
                "ckpt checksum": lambda: _bad_zip_member(ckpt),
                "ckpt check_tensors": lambda: check_tensors(state_items, ckpt),
                "st before": lambda: instantiate(config["net"]).load_state_dict(load_file(str(weights))),
                "st after": lambda: read_net(weights.parent, config),
                "st checksum": lambda: _sha256(weights),
                "st check_tensors": lambda: check_tensors(load_file(str(weights)), weights),
                "st load_file": lambda: load_file(str(weights)),
            }
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.rounds):
                for name, fn in cases.items():
                    times[name].append(timed(fn, (ckpt if name.startswith("ckpt") else weights) if args.cold else None))
            ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
            ms["st check_tensors"] -= ms["st load_file"]
            for label, key, path in (("checkpoint (net, EMA, Adam)", "ckpt", ckpt),
                                     ("model.safetensors (EMA)", "st", weights)):
                before, after = ms[f"{key} before"], ms[f"{key} after"]
                print(f"| {preset} | {label} | {path.stat().st_size / 1e6:.1f} | {before:.0f} | {after:.0f} | "
                      f"{after / before:.2f} | {ms[f'{key} checksum']:.0f} | {ms[f'{key} check_tensors']:.0f} |")


if __name__ == "__main__":
    main()
