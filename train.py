"""Pre-train at fixed PLR(s) on the sphere: every PLR x seed of one setup in one run directory.

LRs are effective LRs (ELR = lr / R^2); the actual lr = ELR * R^2 is printed at start.

Synthetic example (PROTOCOL.md section 7): the members train as one population, in lockstep.
Every (data seed, model seed) pair is one "run" of the paper: all its PLRs share the initial point
and the mini-batch order.

  # 4 PLRs x 2 model seeds x 2 data seeds = 16 models, 40000 iterations, batch 16
  # (run_all.sh holds the paper's 23-PLR grid)
  python train.py --dataset tick --model mlp_si --lr 1e-3 7.5e-3 1e-2 0.1 --seed 0 1 --data_seed 0 1 \
      --out runs/synthetic/pretrain/mine
  # -> config.json, members.jsonl, metrics.jsonl (train/test loss, acc, weight_norm every
  #    --eval_every iterations), checkpoints/final.pt (weights + the last 5 snapshots, every 100
  #    iterations, that swa.py averages), results.json

Images (PROTOCOL.md sections 3, 4, 6): SI ConvNet, SI ResNet-18 or practical ResNet-18 on
CIFAR-10/100 or Fashion-MNIST, 200 epochs of batch 128 by default; each member (PLR x seed) is
trained one epoch at a time, so a run usually holds one (one Slurm array task).

  python train.py --dataset cifar10 --data_dir ~/datasets --model convnet_si --lr 1e-3 --seed 0 \
      --out runs/convnet_si_cifar10/pretrain/plr1e-3_s0
  # SI ConvNet width 32: radius R = the SI weights' norm at initialisation (about 12), lr = ELR x R^2
  python train.py --dataset fashion_mnist --model convnet_si --lr 1e-3 1e-2 --epochs 10 \
      --train_size 10000 --out runs/fmnist/pretrain/a        # real data installed by Debian
  # -> metrics.jsonl rows per epoch (train: running mean over the epoch; test: eval-mode BN),
  #    checkpoints/final.pt (all members' state_dicts), epoch_NNNN.pt for --save_epochs

Rerunning the same command resumes an interrupted run from checkpoints/last.pt, or does nothing
when results.json exists.
"""
import torch

from data import check_dataset
from models import DEFAULT_WIDTH, SCALE_INVARIANT, build, check_model
from models.mlp import init_member
from utils.args import (Parser, UserError, check_lrs, check_positive, check_seeds, common_parser,
                        image_parser, main_guard, resolve_epoch_schedule, setup_torch)
from utils.image_step import speed_switches
from utils.image_stage import load_data, run_image_stage
from utils.population import run_stage
from utils.rundir import RunDir
from utils.sphere import project_, si_norm


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser(), image_parser()])
    p.add_argument("--dataset", default="tick", help="tick (synthetic), cifar10, cifar100, fashion_mnist")
    p.add_argument("--model", default="mlp_si", help="mlp_si (tick); convnet_si, resnet18_si, resnet18 (images)")
    p.add_argument("--lr", type=float, nargs="+", required=True, help="pre-training ELR(s) (PLR)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="model seed(s): initial point, batch order")
    p.add_argument("--batch_size", type=int, default=None, help="mini-batch size (tick: 16, the authors' "
                   "value, see PROTOCOL.md 7; images: 128)")
    p.add_argument("--radius", type=float, default=None, help="sphere radius R of the SI weights (tick: 1; "
                   "images: their norm at initialisation)")
    p.add_argument("--width", type=int, default=None, help="width: MLP hidden units 32, ConvNet c 32, "
                   "ResNet-18 k 32 (SI) / 64 (practical)")
    g = p.add_argument_group("synthetic (tick)")
    g.add_argument("--data_seed", type=int, nargs="+", default=None, help="data seed(s): the dataset drawn (0)")
    g.add_argument("--iters", type=int, default=None, help="SGD iterations (default 40000; --smoke 200)")
    g.add_argument("--keep_snapshots", type=int, default=None,
                   help="keep this many final weight snapshots for SWA (default 5; 0 = none)")
    g.add_argument("--snapshot_every", type=int, default=None,
                   help="iterations between SWA snapshots (default 100; --smoke 10)")
    g = p.add_argument_group("images")
    g.add_argument("--epochs", type=int, default=None, help="epochs (default 200; --smoke 2)")
    g.add_argument("--train_size", type=int, default=None, help="keep the first N training images "
                   "(default all; --smoke at most 256)")
    g.add_argument("--test_size", type=int, default=None, help="keep the first N test images "
                   "(default all; --smoke at most 256)")
    g.add_argument("--save_epochs", type=int, nargs="*", default=[],
                   help="also keep the weights at these epochs (checkpoints/epoch_NNNN.pt)")
    return p


SYNTHETIC_ONLY = ("data_seed", "iters", "keep_snapshots", "snapshot_every")
IMAGE_ONLY = ("epochs", "train_size", "test_size", "data_dir", "download", "bf16", "channels_last", "compile",
              "cuda_graph")


def refuse(args, names, setup):
    """Flags that do not apply to this setup are an error, not silently ignored."""
    given = [n for n in names if getattr(args, n) not in (None, False, [], "auto")]
    if given:
        raise UserError(f"--{given[0]} does not apply to {setup}; drop it")


def resolve(args):
    """Validate the flags and fill defaults that depend on the setup and --smoke."""
    check_dataset(args.dataset)
    check_model(args.model, args.dataset)
    check_lrs(args.lr)
    check_seeds(args.seed, "--seed")
    if args.dataset != "tick":
        return resolve_images(args)
    refuse(args, IMAGE_ONLY + ("save_epochs",), "the synthetic setup (tick)")
    args.data_seed = args.data_seed or [0]
    check_seeds(args.data_seed, "--data_seed")
    args.batch_size = args.batch_size or 16
    args.radius = 1.0 if args.radius is None else args.radius
    args.width = args.width or 32
    args.keep_snapshots = 5 if args.keep_snapshots is None else args.keep_snapshots
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


def resolve_images(args):
    refuse(args, SYNTHETIC_ONLY, f"image data ({args.dataset})")
    smoke = args.smoke
    args.data_dir = args.data_dir or "datasets"
    args.epochs = args.epochs or (2 if smoke else 200)
    args.batch_size = args.batch_size or (64 if smoke else 128)
    args.width = args.width or (4 if smoke else DEFAULT_WIDTH[args.model])
    for name in ("epochs", "batch_size", "width"):
        check_positive(getattr(args, name), f"--{name}")
    resolve_epoch_schedule(args, args.epochs, args.save_epochs)
    if args.radius is not None and not args.radius > 0:
        raise UserError(f"--radius must be > 0, got {args.radius}")
    if args.radius is not None and not SCALE_INVARIANT[args.model]:
        raise UserError(f"--radius: {args.model} is not scale-invariant and has no sphere")
    return args


def main_images(args, device):
    speed = speed_switches(args, device)
    data = load_data(args.dataset, args.data_dir, args.download, args.train_size, args.test_size, device,
                     smoke=args.smoke)
    si = SCALE_INVARIANT[args.model]
    model_args = {"width": args.width, "num_classes": data["num_classes"],
                  "in_channels": data["x_train"].shape[1]}
    inits, radii = {}, {}
    for s in args.seed:
        model = build(args.model, s, **model_args)
        if si and args.radius is not None:
            project_(model, args.radius)
        radii[s] = (args.radius or si_norm(model)) if si else None
        inits[s] = model.state_dict()
    members = [{"member": i, "plr": lr, "flr": None, "seed": s, "data_seed": None, "parent_member": None,
                "lr": lr, "radius": radii[s]}
               for i, (s, lr) in enumerate((s, lr) for s in args.seed for lr in args.lr)]
    rd = RunDir(args.out)
    if rd.start(args, "pretrain", members) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    n_si = sum(p.numel() for p in build(args.model, 0, **model_args).parameters() if p.requires_grad)
    print(f"pre-training {len(members)} {args.model} (width {args.width}, {n_si:,} trainable parameters) on "
          f"{args.dataset} ({len(data['y_train'])} train / {len(data['y_test'])} test images), {device}, "
          f"{args.epochs} epochs of batch {args.batch_size}")
    for m in members:
        print(f"  member {m['member']}: seed {m['seed']}, " + (
            f"ELR {m['lr']:g}, radius R = {m['radius']:.4g}, lr = ELR x R^2 = {m['lr'] * m['radius'] ** 2:.4g}, "
            f"momentum 0, weight decay 0, no augmentation" if si else
            f"lr {m['lr']:g}, momentum 0.9, weight decay 5e-4, crop + flip (no sphere)"))
    meta = {"model": args.model, "model_args": model_args, "dataset": args.dataset, "batch_size": args.batch_size,
            "data": {"data_dir": args.data_dir, "train_size": data["train_size"], "test_size": data["test_size"]}}
    results = run_image_stage(rd, kind="pretrain", members=members, inits=[inits[m["seed"]] for m in members],
                              salt=0, epoch0=0, epochs=args.epochs, data=data, meta=meta,
                              batch_size=args.batch_size, device=device, eval_every=args.eval_every,
                              checkpoint_every=args.checkpoint_every, save_epochs=set(args.save_epochs),
                              **speed)
    rd.write_results(results)
    print(f"done: {args.out}")


def main():
    args = resolve(build_parser().parse_args())
    device = setup_torch(args)
    if args.dataset != "tick":
        return main_images(args, device)
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
