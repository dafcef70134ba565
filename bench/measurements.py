"""Cost of the measurements on image models: frequency-band evaluation and one interpolation path.

  python bench/measurements.py                          # SI ConvNet width 32, CIFAR-sized random data
  python bench/measurements.py --train_images 5000 --points 5 --threads 1

Prints, for an SI ConvNet (width 32, 10 classes) on random CIFAR-sized uint8 images:
  bands    eval_fourier.py's work for one member: the regular test set and the 4 default band
           groups (0, 1-8, 9-24, 25-32) of --test_images images, FFTs and forward passes;
  path     eval_geometry.py's work for one pair: --points points of a linear path, each with the
           re-projection, BN recomputation over the training set, train error (train-mode BN)
           and test error; with fewer --train_images than CIFAR's 50,000 it also prints the time
           scaled to 50,000 (the passes over the training set dominate and scale linearly).
The code timed is the repository's own (analysis/fourier.py, engine/module.py: path).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.images import CIFAR_MEAN, CIFAR_STD, normalize  # noqa: E402
from models import build  # noqa: E402
from analysis.fourier import PAPER_BANDS, band_test_sets, parse_bands  # noqa: E402
from engine import checkpoint  # noqa: E402
from engine.module import member_accuracy, path  # noqa: E402
from engine.sphere import si_norm  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--test_images", type=int, default=10000)
    p.add_argument("--train_images", type=int, default=50000)
    p.add_argument("--points", type=int, default=21, help="points on the path")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    data = {"x_test": torch.randint(0, 256, (args.test_images, 3, 32, 32), dtype=torch.uint8, generator=g),
            "y_test": torch.randint(0, 10, (args.test_images,), generator=g),
            "x_train": torch.randint(0, 256, (args.train_images, 3, 32, 32), dtype=torch.uint8, generator=g),
            "y_train": torch.randint(0, 10, (args.train_images,), generator=g),
            "mean": CIFAR_MEAN, "std": CIFAR_STD}
    data = {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.items()}
    for split in ("train", "test"):
        data[f"xn_{split}"] = normalize(data[f"x_{split}"], CIFAR_MEAN, CIFAR_STD)
    model_args = {"width": args.width, "num_classes": 10, "in_channels": 3}
    states, members = [], []
    for seed in (0, 1):
        model = build("convnet_si", seed, **model_args)
        states.append(model.state_dict())
        members.append({"member": seed, "radius": si_norm(model), "seed": seed})
    ckpt = {"model": "convnet_si", "model_args": model_args, "state": checkpoint.stack(states), "members": members,
            "batch_size": 128}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; SI ConvNet width {args.width}")
    one = dict(ckpt, state=checkpoint.stack(states[:1]), members=members[:1])
    t0 = time.perf_counter()
    accuracy = member_accuracy(one, device)
    accuracy(data["xn_test"], data["y_test"])
    for _, x in band_test_sets(data["x_test"], parse_bands(PAPER_BANDS), CIFAR_MEAN, CIFAR_STD):
        accuracy(x, data["y_test"])
    t = time.perf_counter() - t0
    print(f"bands: regular test set + 4 band groups of {args.test_images:,} images, one member: {t:.1f} s", flush=True)
    alphas = [i / (args.points - 1) for i in range(args.points)]
    t0 = time.perf_counter()
    path(ckpt, 0, ckpt, 1, alphas, data, device)
    t = time.perf_counter() - t0
    scaled = "" if args.train_images == 50000 else \
        f" (~{t * 50000 / args.train_images / 60:.1f} min with 50,000 training images)"
    print(f"path: {args.points} points, BN recomputation + train error over {args.train_images:,} and test error "
          f"over {args.test_images:,} images each: {t:.1f} s{scaled}")


if __name__ == "__main__":
    main()
