"""Fine-tune a pre-training run at fixed FLR(s): every member of the parent at every FLR.

Synthetic example (PROTOCOL.md section 7): 20000 iterations per FLR, same batch size and sphere
as the parent; each fine-tuned member keeps its parent's data stream (new shuffles).

  python finetune.py --from runs/synthetic/pretrain/all --lr 3.16e-5 7.5e-3 \
      --out runs/synthetic/finetune/all
  # -> one member per (parent member, FLR); members.jsonl names the parent member, its PLR and
  #    the FLR; same files as train.py

Images (PROTOCOL.md section 4): from the parent's last epoch (or --from_epoch, a checkpoint kept
with train.py --save_epochs), 200 epochs at each FLR, same data, sphere and batch size.

  python finetune.py --from runs/convnet_si_cifar10/pretrain/plr1e-3_s0 --lr 1e-5 5e-4 \
      --out runs/convnet_si_cifar10/finetune/plr1e-3_s0
"""
import torch

from utils.args import (Parser, UserError, check_lrs, check_positive, common_parser, image_parser,
                        main_guard, resolve_epoch_schedule, setup_torch)
from utils import checkpoint
from utils.image_step import speed_switches
from utils.image_stage import parent_setup, run_image_stage
from utils.population import run_stage
from utils.rundir import RunDir, load_parent


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser(), image_parser()])
    p.add_argument("--from", dest="parent", required=True, help="pre-training run directory")
    p.add_argument("--lr", type=float, nargs="+", required=True, help="fine-tuning ELR(s) (FLR)")
    p.add_argument("--iters", type=int, default=None, help="synthetic: SGD iterations (default 20000; --smoke 100)")
    p.add_argument("--epochs", type=int, default=None, help="images: epochs (default 200; --smoke 2)")
    p.add_argument("--from_epoch", type=int, default=None,
                   help="images: start from the parent's checkpoint of this epoch (default: its last)")
    p.add_argument("--save_epochs", type=int, nargs="*", default=[],
                   help="images: also keep the weights at these epochs (checkpoints/epoch_NNNN.pt)")
    p.add_argument("--sharpness", action="store_true", help="images: log the sharpness (mean mini-batch "
                   "gradient norm over the training set) at every evaluation, for eval_geometry.py")
    return p


def main_images(args, parent, ckpt):
    if args.iters is not None:
        raise UserError("--iters is for the synthetic setup; image runs take --epochs")
    args.epochs = args.epochs or (2 if args.smoke else 200)
    check_positive(args.epochs, "--epochs")
    resolve_epoch_schedule(args, args.epochs, args.save_epochs)
    if args.from_epoch is not None:
        path = parent.epoch_ckpt(args.from_epoch)
        ckpt = checkpoint.load(path, kinds=["pretrain"])
        if ckpt is None:
            raise UserError(f"--from_epoch {args.from_epoch}: {path} does not exist (train.py --save_epochs)")
    device = setup_torch(args)
    speed = speed_switches(args, device)
    data = parent_setup(ckpt, args, device)
    members = [{"member": i, "plr": pm["plr"], "flr": flr, "seed": pm["seed"], "data_seed": None,
                "parent_member": pm["member"], "lr": flr, "radius": pm["radius"]}
               for i, (pm, flr) in enumerate((pm, flr) for pm in ckpt["members"] for flr in args.lr)]
    rd = RunDir(args.out)
    if rd.start(args, "finetune", members, parent=parent.path) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    print(f"fine-tuning {len(ckpt['members'])} {ckpt['model']} x {len(args.lr)} FLRs = {len(members)} from "
          f"epoch {ckpt['epoch']} of {parent.path}, {args.epochs} epochs on {device}")
    for m in members:
        print(f"  member {m['member']}: PLR {m['plr']:g}, seed {m['seed']}, FLR {m['lr']:g}" +
              (f", lr = FLR x R^2 = {m['lr'] * m['radius'] ** 2:.4g}" if m["radius"] else ""))
    meta = dict({k: ckpt[k] for k in ("model", "model_args", "dataset", "batch_size", "data")},
                parent=parent.path, parent_epoch=ckpt["epoch"])
    results = run_image_stage(rd, kind="finetune", members=members,
                              inits=[ckpt["states"][m["parent_member"]] for m in members],
                              salt=1, epoch0=0, epochs=args.epochs, data=data, meta=meta,
                              batch_size=ckpt["batch_size"], device=device, eval_every=args.eval_every,
                              checkpoint_every=args.checkpoint_every, save_epochs=set(args.save_epochs),
                              with_sharpness=args.sharpness, **speed)
    rd.write_results(results)
    print(f"done: {args.out}")


def main():
    args = build_parser().parse_args()
    check_lrs(args.lr)
    parent, pconfig, ckpt = load_parent(args.parent)
    if ckpt["dataset"] != "tick":
        return main_images(args, parent, ckpt)
    for flag in ("epochs", "from_epoch", "data_dir", "sharpness"):
        if getattr(args, flag) not in (None, False):
            raise UserError(f"--{flag} is for image runs; {args.parent} is a synthetic run")
    args.iters = args.iters or (100 if args.smoke else 20000)
    args.eval_every = args.eval_every or (50 if args.smoke else 2000)
    args.checkpoint_every = args.checkpoint_every or (100 if args.smoke else 5000)
    for name in ("iters", "eval_every", "checkpoint_every"):
        check_positive(getattr(args, name), f"--{name}")
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
