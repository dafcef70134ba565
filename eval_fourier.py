"""Accuracy on single-feature test sets (ticks) or frequency-band test sets (images), per member.

Images (docs/protocol.md section 5): each test image and colour channel is split by the band
b = |k| + |l| of its centred 2D spectrum; a band-group test set keeps bands lo..hi (real part of
the inverse DFT; only a group holding band 0 is mean/std-normalised). Accuracy on a group measures
how much the model relies on those frequencies: 0 background colour, 1-8 low, 9-24 mid, 25-32 high.

  python eval_fourier.py --run runs/convnet_si_cifar10/pretrain/plr1e-3_s0            # default bands
  python eval_fourier.py --run runs/.../swa/plr1e-3_s0 --bands 0,1-6,7-24,25-32       # another split
  # -> RUN/features.jsonl: one row per member, {"member": 0, "test_acc": 0.86,
  #    "bands": {"0": 0.1, "1-8": 0.3, "9-24": 0.6, "25-32": 0.1}}; keys exactly as in --bands.
  #    A second split adds its groups to the same rows.
  python eval_fourier.py --run runs/.../pretrain/plr1e-3_s0 --band_splits 4,6,8,10  # paper Fig. 16
  # -> the default groups (or --bands) and, for each low/mid split s, the groups 0, 1-s, (s+1)-24,
  #    25-32 (for 32x32; shared groups computed once) added to "bands", plus "band_splits": [4, 6, 8,
  #    10] and "band_split_groups": {"4": {"low": "1-4", "mid": "5-24"}, ...} (each split's low and
  #    mid keys in "bands"); report.py adds summary.json's "band_splits" and draws band_splits.png.

Band images for display (paper Fig. 7; any image dataset, no model): a few test images, their band
images (each channel scaled to [0, 1]) and the log-amplitude spectrum masked to each group.

  python eval_fourier.py --band_images cifar10 --data_dir ~/datasets --out fig7.png [--n 4] [--bands ...]
  # -> fig7.png: per image, a row of the image and its band images (grey for one channel) and a row
  #    of log(1 + |F|) (centred spectrum, summed over channels) and its part in each group

Synthetic example (docs/protocol.md section 7): for each of the 16 tick features, a test set in which
only that feature is informative and the other 15 lie on the decision boundary. A member's
accuracy on set i is how much it relies on feature i; report.py sorts the 16 values per member
(rank 1 = the most used feature) and averages the sorted curves over seeds.

  python eval_fourier.py --run runs/synthetic/pretrain/all
  # -> runs/synthetic/pretrain/all/features.jsonl: one row per member,
  #    {"member": 0, "test_acc": 0.93, "features": [16 accuracies, feature order]}

Works on any run (pre-training, fine-tuning, SWA). Skips what features.jsonl already holds
(the synthetic features, or every requested band group and split) unless --force.
"""
import os
import time

import torch

import data as datasets
import models
from analysis.fourier import band_test_sets, default_bands, parse_band_splits, parse_bands, split_groups
from core.errors import Parser, UserError, main_guard
from core.io import read_jsonl, write_jsonl_atomic
from engine import setup
from engine.args import setup_torch
from engine.rundir import RunDir


def build_parser():
    p = Parser(description=__doc__.split("\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="run directory to evaluate (pretrain, finetune or swa)")
    what.add_argument("--band_images", metavar="DATASET", help="draw a few test images of DATASET (a registry "
                      "name, path/to/file.npz or module:function) with their band images and masked spectra "
                      "to --out (paper Fig. 7); no model needed")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--force", action="store_true", help="recompute even if features.jsonl exists")
    p.add_argument("--bands", default=None, help="images: band groups, comma-separated lo-hi ranges "
                   "of |k| + |l| (a single number is one band; default 0,1-8,9-24,25-32 for 32x32, scaled "
                   "to the top band h//2 + w//2 for other sizes)")
    p.add_argument("--band_splits", default=None, metavar="S,S,...",
                   help="images: the band-split study (paper Fig. 16): for each low/mid split s, also the "
                   "groups 0, 1-s, (s+1)-M, (M+1)-top, with top = h//2 + w//2 the highest band and "
                   "M = round(24 top / 32) the mid/high boundary, as the default groups scale (M = 24, top = 32 "
                   "for 32x32 images; 21, 28 for 28x28); each s an integer 1 <= s < M, e.g. 4,6,8,10")
    p.add_argument("--data_dir", default=None, help="images: dataset folder (default: the run's; "
                   "--band_images: datasets)")
    p.add_argument("--download", action="store_true", help="--band_images: let torchvision download a "
                   "missing dataset")
    p.add_argument("--out", default=None, help="--band_images: the figure file to write (.png, .pdf, ...)")
    p.add_argument("--n", type=int, default=None, help="--band_images: how many test images (the first n; default 4)")
    return p


def single_feature_rows(dataset, backend, ckpt, accuracy, test, device):
    """Datasets drawn per data seed (tick): every member's accuracy on each single-feature test set
    (the record's `feature_sets`: 16 for tick), on the sets of its own data seed."""
    seeds = backend.data_seeds(ckpt)  # of each group of members that share their data
    sets = {d: dataset.feature_sets(d) for d in sorted(set(seeds))}
    n_features = len(next(iter(sets.values()))[0])
    feats = torch.stack([accuracy(torch.stack([sets[d][0][i] for d in seeds]).to(device),
                                  torch.stack([sets[d][1][i] for d in seeds]).float().to(device))
                         for i in range(n_features)], dim=1)  # (M, features)
    top = feats.sort(dim=1, descending=True).values
    print(f"median sorted single-feature accuracy, rank 1 / 2 / {n_features}: {top[:, 0].median():.1%} / "
          f"{top[:, 1].median():.1%} / {top[:, -1].median():.1%}")
    return [{"member": m["member"], "test_acc": test[i], "features": feats[i].tolist()}
            for i, m in enumerate(ckpt["members"])]


def band_rows(ckpt, accuracy, test, bands, test_set, old, splits):
    """Image datasets: accuracy on each band group's test set; groups already in features.jsonl are
    kept. splits: {s: {"low": key, "mid": key}} of the band-split study, merged into the rows'."""
    accs = {}
    for key, x in band_test_sets(test_set["raw"], bands, test_set["mean"], test_set["std"]):  # a group at a time
        accs[key] = accuracy(x, test_set["y"]).tolist()
    if accs:
        print("median accuracy: " + ", ".join(f"{k} {torch.tensor(v).median():.1%}" for k, v in accs.items()))
    rows = []
    for i, m in enumerate(ckpt["members"]):
        prev = old.get(m["member"], {})
        row = {"member": m["member"], "test_acc": test[i],
               "bands": dict(prev.get("bands", {}), **{k: v[i] for k, v in accs.items()})}
        rows.append(with_splits(row, prev, splits))
    return rows


def with_splits(row, old, splits):
    """The row with the split study's fields: "band_splits" (sorted splits, old and new) and
    "band_split_groups" ({"4": {"low": "1-4", "mid": "5-24"}}: the keys under "bands" of each split's
    low and mid group, for report.py)."""
    groups = dict(old.get("band_split_groups", {}), **{str(s): g for s, g in splits.items()})
    if groups:
        order = sorted(groups, key=int)
        row = dict(row, band_splits=[int(s) for s in order], band_split_groups={s: groups[s] for s in order})
    return row


def split_study(spec, h, w):
    """--band_splits for h x w images: ({s: {"low": key, "mid": key}}, the groups of all splits, each once)."""
    splits, groups = {}, {}
    for s in parse_band_splits(spec, h, w):
        g = split_groups(s, h, w)   # 0, low, mid[, high]
        splits[s] = {"low": g[1][0], "mid": g[2][0]}
        groups.update((key, (key, lo, hi)) for key, lo, hi in g)
    return splits, list(groups.values())


def draw_band_images(args):
    """--band_images: the first --n test images of a dataset, their band images and masked spectra."""
    from analysis.figures import band_images_figure, check_figure_path  # matplotlib only here
    bands = parse_bands(args.bands) if args.bands else None  # bad groups fail before the data are read
    if args.force or args.band_splits is not None:
        raise UserError("--force and --band_splits are for --run; --band_images draws images only")
    if not args.out:
        raise UserError("--band_images needs --out FILE.png (the figure to write)")
    check_figure_path(args.out)
    n = 4 if args.n is None else args.n
    if n < 1:
        raise UserError(f"--n {n}: give at least one image")
    dataset = datasets.resolve(args.band_images)
    if dataset.features != "bands":
        raise UserError(f"--band_images needs an image dataset; {dataset.name} has no images")
    device = setup_torch(args)
    x = dataset.load(args.data_dir or "datasets", args.download, None, device)["x_test"]  # (N, C, H, W) uint8
    if n > len(x):
        raise UserError(f"--n {n}: {dataset.name} has {len(x)} test images")
    bands = bands or parse_bands(default_bands(*x.shape[-2:]))
    band_images_figure(x[:n].cpu(), bands, args.out)
    print(f"{args.out}: {n} {dataset.name} test images of {tuple(x.shape[1:])}, band groups "
          f"{','.join(k for k, _, _ in bands)}")


def main():
    args = build_parser().parse_args()
    if args.band_images is not None:
        return draw_band_images(args)
    if args.out is not None or args.n is not None or args.download:
        raise UserError("--out, --n and --download are for --band_images; --run writes RUN/features.jsonl")
    rd = RunDir(args.run)
    if not rd.exists():
        raise UserError(f"--run {args.run} is not a run directory (no config.json)")
    ckpt = rd.final(kinds=["pretrain", "finetune", "swa"])
    dataset = datasets.resolve(ckpt["dataset"])
    backend = setup.backend(models.resolve(ckpt["model"]))
    out = os.path.join(rd.path, "features.jsonl")
    old = {r["member"]: r for r in read_jsonl(out)} if os.path.exists(out) else {}
    if dataset.features == "bands":
        h, w = ckpt["data"]["image_size"]
        splits, split_bands = split_study(args.band_splits, h, w) if args.band_splits is not None else ({}, [])
        args.bands = args.bands or default_bands(h, w)
        bands = parse_bands(args.bands)
        bands += [g for g in split_bands if g[0] not in {k for k, _, _ in bands}]
        todo = [b for b in bands if args.force or not old or any(b[0] not in r.get("bands", {}) for r in old.values())]
        new_splits = {s: g for s, g in splits.items() if args.force or not old
                      or any(str(s) not in r.get("band_split_groups", {}) for r in old.values())}
        done = f"{out} has band groups {','.join(k for k, _, _ in bands)}" + (
            f" and band splits {','.join(map(str, splits))}" if splits else "")
        if not todo and new_splits:  # every group is there already: record the splits, no evaluation
            write_jsonl_atomic(out, [with_splits(r, r, new_splits) for _, r in sorted(old.items())])
            print(f"{out}: band splits {','.join(map(str, splits))} recorded (their groups were evaluated before)")
            return
    else:
        if args.bands or args.data_dir or args.band_splits is not None:
            raise UserError(f"--bands, --band_splits and --data_dir are for image runs; {dataset.name} runs have "
                            "single-feature sets")
        todo = args.force or not old
        done = f"{out} exists"
    if not todo:
        print(f"{done}; nothing to do (--force recomputes)")
        return
    device = setup_torch(args)
    t0 = time.perf_counter()
    test_set = backend.test_set(ckpt, args, device)  # the regular test set (each member's own, per data seed)
    accuracy = backend.member_accuracy(ckpt, device)  # every member's, on any test set
    test = accuracy(test_set["x"], test_set["y"]).tolist()
    print(f"{out}: {len(test)} members, median test accuracy {torch.tensor(test).median():.1%}")
    if dataset.features == "bands":
        rows = band_rows(ckpt, accuracy, test, todo, test_set, old, new_splits)
    else:
        rows = single_feature_rows(dataset, backend, ckpt, accuracy, test, device)
    write_jsonl_atomic(out, rows)
    print(f"{out}: written in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main_guard(main)
