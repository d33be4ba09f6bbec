"""FD-VGG reference points, so a generator's number can be read: prints a table of FD-VGG against the real set for
two halves of the real set (the floor for that many images), uniform-noise images (a ceiling), and each folder given.

    python benchmarks/fd_vgg_reference.py ../shared/data/art-dev --image-size 32 --fake outputs/.../images

The real features are computed once; each row uses the same VGG layer, input size and image size.
"""

from __future__ import annotations

import argparse
import time

import torch

from art_diffusion.metrics.fd_vgg import LAYERS, features, frechet_distance, layer_extractor, load_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("real_dir")
    parser.add_argument("--fake", nargs="*", default=[], help="folders of generated images")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--layer", type=int, default=LAYERS["relu5_3"])
    parser.add_argument("--num-noise", type=int, default=500)
    parser.add_argument("--subset-size", type=int, nargs="*", default=[],
                        help="also two disjoint random real subsets of this size (the floor at a held-out size)")
    parser.add_argument("--weights", default="imagenet")
    args = parser.parse_args()

    start = time.time()
    vgg = layer_extractor(args.weights, args.layer)

    def embed(images: torch.Tensor) -> torch.Tensor:
        return features(images, vgg, args.input_size)

    real = embed(load_images(args.real_dir, args.image_size))
    shuffled = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))]
    noise_images = torch.rand(args.num_noise, 3, args.image_size, args.image_size,
                              generator=torch.Generator().manual_seed(0))
    rows = [
        ("real half vs other real half", len(real) // 2, frechet_distance(shuffled[::2], shuffled[1::2])),
        ("uniform noise", args.num_noise, frechet_distance(real, embed(noise_images))),
    ]
    for size in args.subset_size:
        rows.append((f"{size} real vs {size} other real", size,
                     frechet_distance(shuffled[:size], shuffled[size:2 * size])))
    for folder in args.fake:
        fake = embed(load_images(folder, args.image_size))
        rows.append((folder, len(fake), frechet_distance(real, fake)))

    print(f"FD-VGG vs {args.real_dir} ({len(real)} images), image_size={args.image_size}, "
          f"input_size={args.input_size}, layer={args.layer}, weights={args.weights}")
    print(f"| {'compared set':<60} | {'images':>6} | {'FD-VGG':>9} |")
    print(f"|{'-' * 62}|{'-' * 8}|{'-' * 11}|")
    for name, n, value in rows:
        print(f"| {name:<60} | {n:>6} | {value:>9.2f} |")
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
