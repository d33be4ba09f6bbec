"""FLOPs of one training image (the network, the perceptual loss's VGG, forward and backward), and what they imply.

    python benchmarks/flops.py --image-size 128

Counted with torch.utils.flop_counter.FlopCounterMode on one real training step of the project's components (the
ConvDiffusionModel and HybridLoss with the ImageNet VGG16 slice), batch 32, divided by the batch. A multiply-add
counts as 2 FLOPs. Prints a markdown table and, from the measured CPU images/s passed with --cpu-images-per-s,
the achieved CPU FLOP rate; with --gpu-peak-tflops and --mfu, the images/s a GPU would need the data path to feed.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from art_diffusion.losses import HybridLoss
from art_diffusion.nets import ConvDiffusionModel


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cpu-images-per-s", type=float, help="measured training images/s on this CPU (levers.py)")
    p.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--mfu", type=float, default=0.3, help="share of the peak a convnet this small reaches")
    args = p.parse_args()

    net, loss = ConvDiffusionModel(), HybridLoss()  # the ImageNet VGG (FLOPs do not depend on the weights)
    loss.perceptual.build()
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size)
    b = args.batch_size
    net_forward = count(lambda: net(x)) / b
    loss_forward = count(lambda: loss(net(x).detach().requires_grad_(), x)) / b
    total = count(lambda: loss(net(x), x)["loss"].backward()) / b
    rows = [("network forward", net_forward), ("loss forward (VGG16 relu3_3 on output and target)", loss_forward),
            ("backward (network + VGG on the output)", total - net_forward - loss_forward),
            ("**one training image**", total)]
    print(f"{args.image_size} px, batch {b}:\n")
    print("| part | GFLOPs per image |\n| --- | --- |")
    for name, flops in rows:
        print(f"| {name} | {flops / 1e9:.2f} |")
    if args.cpu_images_per_s:
        print(f"\nCPU: {args.cpu_images_per_s:.1f} images/s x {total / 1e9:.2f} GFLOPs = "
              f"{args.cpu_images_per_s * total / 1e12:.2f} TFLOP/s achieved")
    gpu = args.gpu_peak_tflops * 1e12 * args.mfu / total
    print(f"\nGPU at {args.gpu_peak_tflops:g} TFLOP/s peak and {args.mfu:.0%} utilisation: {gpu:,.0f} images/s "
          "the data path must deliver")


if __name__ == "__main__":
    main()
