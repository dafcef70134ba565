"""Accuracy on single-feature test sets (ticks) or frequency-band test sets (images), per member.

Images (PROTOCOL.md section 5): each test image and colour channel is split by the band
b = |k| + |l| of its centred 2D spectrum; a band-group test set keeps bands lo..hi (real part of
the inverse DFT; only a group holding band 0 is mean/std-normalised). Accuracy on a group measures
how much the model relies on those frequencies: 0 background colour, 1-8 low, 9-24 mid, 25-32 high.

  python eval_fourier.py --run runs/convnet_si_cifar10/pretrain/plr1e-3_s0            # default bands
  python eval_fourier.py --run runs/.../swa/plr1e-3_s0 --bands 0,1-6,7-24,25-32       # another split
  # -> RUN/features.jsonl: one row per member, {"member": 0, "test_acc": 0.86,
  #    "bands": {"0": 0.1, "1-8": 0.3, "9-24": 0.6, "25-32": 0.1}}; keys exactly as in --bands.
  #    A second split adds its groups to the same rows.

Synthetic example (PROTOCOL.md section 7): for each of the 16 tick features, a test set in which
only that feature is informative and the other 15 lie on the decision boundary. A member's
accuracy on set i is how much it relies on feature i; report.py sorts the 16 values per member
(rank 1 = the most used feature) and averages the sorted curves over seeds.

  python eval_fourier.py --run runs/synthetic/pretrain/all
  # -> runs/synthetic/pretrain/all/features.jsonl: one row per member,
  #    {"member": 0, "test_acc": 0.93, "features": [16 accuracies, feature order]}

Works on any run (pre-training, fine-tuning, SWA). Skips what features.jsonl already holds
(the synthetic features, or every requested band group) unless --force.
"""
import os
import time

import torch

import data as datasets
import models
from utils import engine
from utils.args import Parser, UserError, main_guard, setup_torch
from utils.fourier import band_test_sets, default_bands, parse_bands
from utils.rundir import RunDir, read_jsonl, write_jsonl_atomic


def build_parser():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run directory to evaluate (pretrain, finetune or swa)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--force", action="store_true", help="recompute even if features.jsonl exists")
    p.add_argument("--bands", default=None, help="images: band groups, comma-separated lo-hi ranges "
                   "of |k| + |l| (a single number is one band)")
    p.add_argument("--data_dir", default=None, help="images: dataset folder (default: the run's)")
    return p


def single_feature_rows(dataset, backend, ckpt, test, device):
    """Datasets drawn per data seed (tick): every member's accuracy on each single-feature test set
    (the record's `feature_sets`: 16 for tick), on the sets of its own data seed."""
    seeds = backend.data_seeds(ckpt)  # of each group of members that share their data
    sets = {d: dataset.feature_sets(d) for d in sorted(set(seeds))}
    n_features = len(next(iter(sets.values()))[0])
    feats = torch.stack([backend.member_accuracy(ckpt, torch.stack([sets[d][0][i] for d in seeds]).to(device),
                                                 torch.stack([sets[d][1][i] for d in seeds]).float().to(device),
                                                 device)
                         for i in range(n_features)], dim=1)  # (M, features)
    top = feats.sort(dim=1, descending=True).values
    print(f"median sorted single-feature accuracy, rank 1 / 2 / {n_features}: {top[:, 0].median():.1%} / "
          f"{top[:, 1].median():.1%} / {top[:, -1].median():.1%}")
    return [{"member": m["member"], "test_acc": test[i], "features": feats[i].tolist()}
            for i, m in enumerate(ckpt["members"])]


def band_rows(backend, ckpt, test, bands, test_set, old, device):
    """Image datasets: accuracy on each band group's test set; groups already in features.jsonl are kept."""
    accs = {}
    for key, x in band_test_sets(test_set["raw"], bands, test_set["mean"], test_set["std"]):  # a group at a time
        accs[key] = backend.member_accuracy(ckpt, x, test_set["y"], device).tolist()
    print("median accuracy: " + ", ".join(f"{k} {torch.tensor(v).median():.1%}" for k, v in accs.items()))
    return [{"member": m["member"], "test_acc": test[i],
             "bands": dict(old.get(m["member"], {}).get("bands", {}), **{k: v[i] for k, v in accs.items()})}
            for i, m in enumerate(ckpt["members"])]


def main():
    args = build_parser().parse_args()
    rd = RunDir(args.run)
    if not rd.exists():
        raise UserError(f"--run {args.run} is not a run directory (no config.json)")
    ckpt = rd.final(kinds=["pretrain", "finetune", "swa"])
    dataset = datasets.resolve(ckpt["dataset"])
    backend = engine.backend(models.resolve(ckpt["model"]))
    out = os.path.join(rd.path, "features.jsonl")
    old = {r["member"]: r for r in read_jsonl(out)} if os.path.exists(out) else {}
    if dataset.features == "bands":
        args.bands = args.bands or default_bands(*ckpt["data"]["image_size"])
        bands = parse_bands(args.bands)
        todo = [b for b in bands if args.force or not old or any(b[0] not in r.get("bands", {}) for r in old.values())]
        done = f"{out} has band groups {args.bands}"
    else:
        if args.bands or args.data_dir:
            raise UserError(f"--bands and --data_dir are for image runs; {dataset.name} runs have single-feature sets")
        todo = args.force or not old
        done = f"{out} exists"
    if not todo:
        print(f"{done}; nothing to do (--force recomputes)")
        return
    device = setup_torch(args)
    t0 = time.perf_counter()
    test_set = backend.test_set(ckpt, args, device)  # the regular test set (each member's own, per data seed)
    test = backend.member_accuracy(ckpt, test_set["x"], test_set["y"], device).tolist()
    print(f"{out}: {len(test)} members, median test accuracy {torch.tensor(test).median():.1%}")
    if dataset.features == "bands":
        rows = band_rows(backend, ckpt, test, todo, test_set, old, device)
    else:
        rows = single_feature_rows(dataset, backend, ckpt, test, device)
    write_jsonl_atomic(out, rows)
    print(f"{out}: written in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main_guard(main)
