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

from data.tick import N_FEATURES, single_feature_sets
from utils.args import Parser, UserError, main_guard, setup_torch
from utils.fourier import band_test_sets, parse_bands
from utils.image_stage import eval_model, evaluate as evaluate_images, run_data
from utils.population import evaluate, group_data
from utils.rundir import RunDir, read_jsonl, write_jsonl_atomic

DEFAULT_BANDS = "0,1-8,9-24,25-32"


def build_parser():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run directory to evaluate (pretrain, finetune or swa)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--force", action="store_true", help="recompute even if features.jsonl exists")
    p.add_argument("--bands", default=DEFAULT_BANDS, help="images: band groups, comma-separated lo-hi ranges "
                   "of |k| + |l| (a single number is one band)")
    p.add_argument("--data_dir", default=None, help="images: dataset folder (default: the run's)")
    return p


def feature_accuracies(state, streams, device):
    """Regular test accuracy (M,) and single-feature accuracies (M, 16) of every member."""
    data_seeds = [s[0] for s in streams]
    sets = {d: single_feature_sets(d) for d in sorted(set(data_seeds))}
    x = torch.stack([sets[d][0] for d in data_seeds]).to(device)  # (P, 16, n, 32)
    y = torch.stack([sets[d][1] for d in data_seeds]).float().to(device)  # (P, 16, n)
    state = {k: v.to(device) for k, v in state.items()}
    per_feature = [evaluate(state, len(streams), x[:, i], y[:, i])[1] for i in range(N_FEATURES)]
    data = group_data(data_seeds, device)
    test_acc = evaluate(state, len(streams), data["x_test"], data["y_test"])[1]
    return test_acc, torch.stack(per_feature, dim=1)


def band_accuracies(ckpt, data, bands, device):
    """Regular test accuracy (list over members) and {group: [acc per member]} of an image run."""
    models = [eval_model(ckpt, device, state) for state in ckpt["states"]]
    test = [evaluate_images(m, data["xn_test"], data["y_test"], device)[1] for m in models]
    accs = {}
    for key, x in band_test_sets(data["x_test"], bands, data["mean"], data["std"]):  # one group at a time
        accs[key] = [evaluate_images(m, x, data["y_test"], device)[1] for m in models]
    return test, accs


def main_images(args, rd, ckpt, out):
    bands = parse_bands(args.bands)
    old = {r["member"]: r for r in read_jsonl(out)} if os.path.exists(out) else {}
    todo = [b for b in bands if args.force or any(b[0] not in r.get("bands", {}) for r in old.values()) or not old]
    if not todo:
        print(f"{out} has band groups {args.bands}; nothing to do (--force recomputes)")
        return
    device = setup_torch(args)
    data = run_data(ckpt, args.data_dir, device)
    t0 = time.perf_counter()
    test, accs = band_accuracies(ckpt, data, todo, device)
    rows = [{"member": m["member"], "test_acc": test[i],
             "bands": dict(old.get(m["member"], {}).get("bands", {}), **{k: v[i] for k, v in accs.items()})}
            for i, m in enumerate(ckpt["members"])]
    write_jsonl_atomic(out, rows)
    print(f"{out}: {len(rows)} members x {len(todo)} band groups of {len(data['y_test'])} test images in "
          f"{time.perf_counter() - t0:.1f} s; median accuracy: test {torch.tensor(test).median():.1%}, " +
          ", ".join(f"{k} {torch.tensor(v).median():.1%}" for k, v in accs.items()))


def main():
    args = build_parser().parse_args()
    rd = RunDir(args.run)
    if not rd.exists():
        raise UserError(f"--run {args.run} is not a run directory (no config.json)")
    ckpt = rd.final(kinds=["pretrain", "finetune", "swa"])
    out = os.path.join(rd.path, "features.jsonl")
    if ckpt.get("dataset") != "tick":
        return main_images(args, rd, ckpt, out)
    if args.bands != DEFAULT_BANDS or args.data_dir:
        raise UserError("--bands and --data_dir are for image runs; tick runs have single-feature sets")
    if os.path.exists(out) and not args.force:
        print(f"{out} exists; nothing to do (--force recomputes)")
        return
    device = setup_torch(args)
    test_acc, feats = feature_accuracies(ckpt["state"], ckpt["streams"], device)
    rows = [{"member": m, "test_acc": test_acc[m].item(), "features": feats[m].tolist()}
            for m in range(len(test_acc))]
    write_jsonl_atomic(out, rows)
    top = feats.sort(dim=1, descending=True).values
    print(f"{out}: {len(rows)} members; median sorted single-feature accuracy, rank 1 / 2 / 16: "
          f"{top[:, 0].median():.1%} / {top[:, 1].median():.1%} / {top[:, -1].median():.1%}")


if __name__ == "__main__":
    main_guard(main)
