"""Fine-tune a pre-training run at fixed FLR(s): every member of the parent at every FLR.

Synthetic example (PROTOCOL.md section 7): 20000 iterations per FLR, same batch size and sphere
as the parent; each fine-tuned member keeps its parent's data stream (new shuffles).

  python finetune.py --from runs/synthetic/pretrain/all --lr 3.16e-5 7.5e-3 \
      --out runs/synthetic/finetune/all
  # -> one member per (parent member, FLR); members.jsonl names the parent member, its PLR and
  #    the FLR; same files as train.py
"""
import torch

from utils.args import Parser, check_lrs, check_positive, common_parser, main_guard, setup_torch
from utils.population import run_stage
from utils.rundir import RunDir, load_parent


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser()])
    p.add_argument("--from", dest="parent", required=True, help="pre-training run directory")
    p.add_argument("--lr", type=float, nargs="+", required=True, help="fine-tuning ELR(s) (FLR)")
    p.add_argument("--iters", type=int, default=None, help="SGD iterations (default 20000; --smoke 100)")
    return p


def main():
    args = build_parser().parse_args()
    check_lrs(args.lr)
    args.iters = args.iters or (100 if args.smoke else 20000)
    args.eval_every = args.eval_every or (50 if args.smoke else 2000)
    args.checkpoint_every = args.checkpoint_every or (100 if args.smoke else 5000)
    for name in ("iters", "eval_every", "checkpoint_every"):
        check_positive(getattr(args, name), f"--{name}")
    parent, pconfig, ckpt = load_parent(args.parent)
    device = setup_torch(args)
    members = [{"member": i, "plr": pm["plr"], "flr": flr, "seed": pm["seed"], "data_seed": pm["data_seed"],
                "parent_member": pm["member"], "lr": flr}
               for i, (pm, flr) in enumerate((pm, flr) for pm in ckpt["members"] for flr in args.lr)]
    rd = RunDir(args.out)
    if rd.start(args, "finetune", members, parent=parent.path) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    # Members stay group-major: group p holds the parent's group p, each member at every FLR.
    index = torch.tensor([m["parent_member"] for m in members])
    init = {k: v[index] for k, v in ckpt["state"].items()}
    radius = ckpt["radius"]
    print(f"fine-tuning {len(ckpt['members'])} models x {len(args.lr)} FLRs = {len(members)} on {device}, "
          f"{args.iters} iterations; radius R = {radius:g}, "
          f"lr = ELR x R^2 = {', '.join(f'{lr * radius ** 2:.3g}' for lr in args.lr)}")
    meta = dict({k: ckpt[k] for k in ("model", "model_args", "dataset", "radius", "groups", "streams",
                                      "batch_size")}, members=members, parent=parent.path)
    results = run_stage(rd, kind="finetune", init=init, groups=ckpt["groups"], streams=ckpt["streams"],
                        elrs=[m["lr"] for m in members], radius=radius, iters=args.iters,
                        batch_size=ckpt["batch_size"], eval_every=args.eval_every,
                        checkpoint_every=args.checkpoint_every, snapshot_steps=set(), meta=meta,
                        device=device)
    rd.write_results(results)
    print(f"done: {args.out}")


if __name__ == "__main__":
    main_guard(main)
