"""Accuracy on single-feature test sets, written into the evaluated run directory.

Synthetic example (PROTOCOL.md section 7): for each of the 16 tick features, a test set in which
only that feature is informative and the other 15 lie on the decision boundary. A member's
accuracy on set i is how much it relies on feature i; report.py sorts the 16 values per member
(rank 1 = the most used feature) and averages the sorted curves over seeds.

  python eval_fourier.py --run runs/synthetic/pretrain/all
  # -> runs/synthetic/pretrain/all/features.jsonl: one row per member,
  #    {"member": 0, "test_acc": 0.93, "features": [16 accuracies, feature order]}

Works on any run of the synthetic setup (pre-training, fine-tuning, SWA). Skips a run that
already has features.jsonl unless --force.
"""
import os

import torch

from data.tick import N_FEATURES, single_feature_sets
from utils.args import Parser, UserError, main_guard, setup_torch
from utils.population import evaluate, group_data
from utils.rundir import RunDir, write_jsonl_atomic


def build_parser():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run directory to evaluate (pretrain, finetune or swa)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--force", action="store_true", help="recompute even if features.jsonl exists")
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


def main():
    args = build_parser().parse_args()
    rd = RunDir(args.run)
    if not rd.exists():
        raise UserError(f"--run {args.run} is not a run directory (no config.json)")
    ckpt = rd.final(kinds=["pretrain", "finetune", "swa"])
    if ckpt.get("dataset") != "tick":
        raise UserError(f"--run {args.run}: dataset {ckpt.get('dataset')!r} has no single-feature sets here")
    out = os.path.join(rd.path, "features.jsonl")
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
