"""Pre-train at fixed PLR(s) on the sphere: a whole population of PLRs x seeds in one process.

Synthetic example (PROTOCOL.md section 7). Every (data seed, model seed) pair is one "run" of the
paper: all its PLRs share the initial point and the mini-batch order. LRs are effective LRs
(ELR = lr / R^2); the actual lr = ELR * R^2 is printed at start.

  # 23-PLR grid x 2 model seeds x 2 data seeds = 92 models, 40000 iterations, batch 16
  python train.py --dataset tick --model mlp_si --lr $(python -c "from utils.grids import *; print(*SYNTHETIC_PLRS)") \
      --seed 0 1 --data_seed 0 1 --out runs/synthetic/pretrain/all
  # -> config.json, members.jsonl, metrics.jsonl (train/test loss, acc, weight_norm every
  #    --eval_every iterations), checkpoints/final.pt (weights + the last 5 snapshots, every 100
  #    iterations, that swa.py averages), results.json

Rerunning the same command resumes an interrupted run from checkpoints/last.pt, or does nothing
when results.json exists.
"""
import torch

from data import check_dataset
from models import check_model
from models.mlp import init_member
from utils.args import (Parser, UserError, check_lrs, check_positive, check_seeds, common_parser,
                        main_guard, setup_torch)
from utils.population import run_stage
from utils.rundir import RunDir


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser()])
    p.add_argument("--dataset", default="tick", help="tick (synthetic)")
    p.add_argument("--model", default="mlp_si", help="mlp_si (synthetic)")
    p.add_argument("--lr", type=float, nargs="+", required=True, help="pre-training ELR(s) (PLR)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="model seed(s): initial point, batch order")
    p.add_argument("--data_seed", type=int, nargs="+", default=[0], help="data seed(s): the dataset drawn")
    p.add_argument("--iters", type=int, default=None, help="SGD iterations (default 40000; --smoke 200)")
    p.add_argument("--batch_size", type=int, default=16, help="mini-batch size (the authors' 16; see PROTOCOL.md 7)")
    p.add_argument("--radius", type=float, default=1.0, help="sphere radius R of the SI weights")
    p.add_argument("--width", type=int, default=32, help="hidden width of the MLP")
    p.add_argument("--keep_snapshots", type=int, default=5,
                   help="keep this many final weight snapshots for SWA (0 = none)")
    p.add_argument("--snapshot_every", type=int, default=None,
                   help="iterations between SWA snapshots (default 100; --smoke 10)")
    return p


def resolve(args):
    """Validate the flags and fill defaults that depend on --smoke."""
    check_dataset(args.dataset)
    check_model(args.model, args.dataset)
    check_lrs(args.lr)
    check_seeds(args.seed, "--seed")
    check_seeds(args.data_seed, "--data_seed")
    smoke = args.smoke
    args.iters = args.iters or (200 if smoke else 40000)
    args.eval_every = args.eval_every or (50 if smoke else 1000)
    args.checkpoint_every = args.checkpoint_every or (100 if smoke else 5000)
    args.snapshot_every = args.snapshot_every or (10 if smoke else 100)
    for name in ("iters", "eval_every", "checkpoint_every", "batch_size", "snapshot_every", "width"):
        check_positive(getattr(args, name), f"--{name}")
    if args.keep_snapshots < 0 or (args.keep_snapshots - 1) * args.snapshot_every >= args.iters:
        raise UserError(f"--keep_snapshots {args.keep_snapshots} x --snapshot_every {args.snapshot_every} "
                        f"does not fit in --iters {args.iters}")
    if not args.radius > 0:
        raise UserError(f"--radius must be > 0, got {args.radius}")
    return args


def main():
    args = resolve(build_parser().parse_args())
    device = setup_torch(args)
    groups = [(d, s) for d in args.data_seed for s in args.seed]  # one stream per (data, model) seed
    members = [{"member": i, "plr": lr, "flr": None, "seed": s, "data_seed": d, "parent_member": None, "lr": lr}
               for i, ((d, s), lr) in enumerate((g, lr) for g in groups for lr in args.lr)]
    rd = RunDir(args.out)
    if rd.start(args, "pretrain", members) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    model_args = {"in_dim": 32, "width": args.width, "head_norm": 10.0}
    inits = {s: init_member(s, radius=args.radius, **model_args) for s in args.seed}
    init = {k: torch.stack([inits[m["seed"]][k] for m in members]) for k in ("w1", "w2", "w3")}
    print(f"pre-training {len(members)} models ({len(groups)} seed pairs x {len(args.lr)} PLRs) on {device}, "
          f"{args.iters} iterations, batch {args.batch_size}; radius R = {args.radius:g}, "
          f"lr = ELR x R^2 = {', '.join(f'{lr * args.radius ** 2:.3g}' for lr in args.lr)}")
    meta = {"model": args.model, "model_args": model_args, "dataset": args.dataset, "radius": args.radius,
            "groups": len(groups), "streams": groups, "batch_size": args.batch_size, "members": members}
    snapshot_steps = {args.iters - k * args.snapshot_every for k in range(args.keep_snapshots)}
    results = run_stage(rd, kind="pretrain", init=init, groups=len(groups), streams=groups,
                        elrs=[m["lr"] for m in members], radius=args.radius, iters=args.iters,
                        batch_size=args.batch_size, eval_every=args.eval_every,
                        checkpoint_every=args.checkpoint_every, snapshot_steps=snapshot_steps,
                        meta=meta, device=device)
    rd.write_results(results)
    print(f"done: {args.out}")


if __name__ == "__main__":
    main_guard(main)
