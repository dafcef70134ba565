"""Pre-train at fixed PLR(s): every PLR x seed of one setup in one run directory.

LRs are effective LRs (ELR = lr / R^2 on the sphere); the actual lr = ELR * R^2 is printed at start.
Any model of the registry (models/__init__.py) or your own class, on any dataset of the registry
(data/__init__.py) or your own data; the recipe is flags, defaulting to the model record's.

Synthetic example (PROTOCOL.md section 7): the members train as one population, in lockstep (the
SI MLP's fused backend). Every (data seed, model seed) pair is one "run" of the paper: all its
PLRs share the initial point and the mini-batch order.

  # 4 PLRs x 2 model seeds x 2 data seeds = 16 models, 40000 iterations, batch 16
  python train.py --dataset tick --model mlp_si --lr 1e-3 7.5e-3 1e-2 0.1 --seed 0 1 --data_seed 0 1 \
      --out runs/synthetic/pretrain/mine
  # -> config.json, members.jsonl, metrics.jsonl (train/test loss, acc, weight_norm every
  #    --eval_every iterations), checkpoints/final.pt (weights + the last 5 snapshots, every 100
  #    iterations, that swa.py averages), results.json

Images (PROTOCOL.md sections 3, 4, 6): 200 epochs of batch 128 by default; each member (PLR x
seed) is trained one epoch at a time, so a run usually holds one (one Slurm array task).

  python train.py --dataset cifar10 --data_dir ~/datasets --model convnet_si --lr 1e-3 --seed 0 \
      --out runs/convnet_si_cifar10/pretrain/plr1e-3_s0
  # SI ConvNet width 32: radius R = the SI weights' norm at initialisation (about 12), lr = ELR x R^2
  python train.py --dataset fashion_mnist --model convnet_si --lr 1e-3 1e-2 --epochs 10 \
      --train_size 10000 --out runs/fmnist/pretrain/a        # real data installed by Debian
  # your own model and data (README: "Your own model and data")
  python train.py --dataset my_data.npz --model my_net.py:Net --model_args width=16 --lr 1e-2 \
      --optimizer adam --out runs/mine/pretrain/a

Rerunning the same command resumes an interrupted run from checkpoints/last.pt, or does nothing
when results.json exists.
"""
import data as datasets
import models
from utils import engine
from utils.args import (Parser, UserError, check_lrs, check_positive, check_seeds, common_parser, image_parser,
                        main_guard, recipe_flags, resolve_recipe, setup_torch)
from utils.rundir import RunDir


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser(), image_parser()])
    p.add_argument("--dataset", default="tick", help="a registry name (tick, cifar10, cifar100, fashion_mnist), "
                   "path/to/file.npz or package.module:function")
    p.add_argument("--model", default="mlp_si", help="a registry name (mlp_si, convnet_si, resnet18_si, resnet18), "
                   "path/to/file.py:Class or package.module:Class")
    p.add_argument("--model_args", nargs="*", default=[], metavar="KEY=VALUE",
                   help="constructor arguments, values as Python literals (width=8 act=\"'relu'\")")
    p.add_argument("--width", type=int, default=None, help="shorthand for --model_args width=N (MLP hidden units "
                   "32, ConvNet c 32, ResNet-18 k 32 (SI) / 64 (practical))")
    p.add_argument("--lr", type=float, nargs="+", required=True, help="pre-training ELR(s) (PLR)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="model seed(s): initial point, batch order")
    p.add_argument("--data_seed", type=int, nargs="+", default=None,
                   help="data seed(s), for datasets drawn per seed (tick; default 0)")
    p.add_argument("--batch_size", type=int, default=None, help="mini-batch size (default: the model record's, "
                   "else the dataset record's: tick 16, the authors' value, see PROTOCOL.md 7; images 128)")
    p.add_argument("--radius", type=float, default=None, help="sphere radius R (default: the model record's; "
                   "tick MLP 1; images: the SI weights' norm at initialisation)")
    recipe_flags(p)
    g = p.add_argument_group("population backend (the synthetic MLP)")
    g.add_argument("--iters", type=int, default=None, help="SGD iterations (default 40000; --smoke 200)")
    g.add_argument("--keep_snapshots", type=int, default=None,
                   help="keep this many final weight snapshots for SWA (default 5; 0 = none)")
    g.add_argument("--snapshot_every", type=int, default=None,
                   help="iterations between SWA snapshots (default 100; --smoke 10)")
    g = p.add_argument_group("module backend (every other model)")
    g.add_argument("--epochs", type=int, default=None, help="epochs (default 200; --smoke 2)")
    g.add_argument("--train_size", type=int, default=None, help="keep the first N training images "
                   "(default all; --smoke at most 256)")
    g.add_argument("--test_size", type=int, default=None, help="keep the first N test images "
                   "(default all; --smoke at most 256)")
    g.add_argument("--save_epochs", type=int, nargs="*", default=[],
                   help="also keep the weights at these epochs (checkpoints/epoch_NNNN.pt)")
    return p


def resolve(args):
    """Validate the flags; returns the model and dataset records, the backend and the recipe."""
    check_lrs(args.lr)
    check_seeds(args.seed, "--seed")
    model, dataset = models.resolve(args.model), datasets.resolve(args.dataset)
    datasets.check_fits(model, dataset)
    args.model, args.dataset = models.canonical(args.model), datasets.canonical(args.dataset)
    backend = engine.backend(model)
    engine.refuse_foreign(args, backend)
    if dataset.per_seed:
        args.data_seed = args.data_seed or [0]
        check_seeds(args.data_seed, "--data_seed")
    elif args.data_seed is not None:
        raise UserError(f"--data_seed does not apply to {dataset.name}: its data are fixed; drop it")
    if args.width is not None:
        args.model_args = args.model_args + [f"width={args.width}"]
    recipe = resolve_recipe(args, model.recipe)
    backend.check_recipe(recipe)
    if recipe["sphere"] == "on" and not model.scale_invariant:
        raise UserError(f"--sphere on: {model.name} does not declare scale_invariant = True; a model off the "
                        f"sphere trains with --sphere off")
    if args.radius is not None and not (args.radius > 0 and recipe["sphere"] == "on"):
        raise UserError(f"--radius {args.radius}: needs a positive radius and the sphere on")
    args.batch_size = args.batch_size or (dataset.smoke_batch_size if args.smoke else
                                          model.batch_size or dataset.batch_size)
    check_positive(args.batch_size, "--batch_size")
    backend.resolve_schedule(args, dataset, "pretrain")
    return model, dataset, backend, recipe


def main():
    args = build_parser().parse_args()
    model, dataset, backend, recipe = resolve(args)
    device = setup_torch(args)
    speed = backend.speed(args, device)
    data = backend.load_data(dataset, args, device)
    model_args = engine.model_args(model, args, data)
    radius = args.radius if args.radius is not None else model.radius
    inits, radii = backend.initial_states(model, model_args, args.seed, radius if recipe["sphere"] == "on" else False,
                                          data, device)
    members = [{"member": i, "plr": lr, "flr": None, "seed": s, "data_seed": d, "parent_member": None, "lr": lr,
                "radius": radii[s]}
               for i, (d, s, lr) in enumerate((d, s, lr) for d in (args.data_seed or [None]) for s in args.seed
                                               for lr in args.lr)]
    meta = engine.meta(args, model_args, recipe, data)
    rd = RunDir(args.out)
    if rd.start(args, "pretrain", members, meta=engine.run_meta(meta)) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    engine.describe(model, model_args, dataset, data, recipe, members, args, device, backend)
    results = backend.train(rd, kind="pretrain", members=members, state=engine.member_states(inits, members),
                            data=data, meta=meta, args=args, device=device, speed=speed)
    rd.write_results(results)
    print(f"done: {args.out}")


if __name__ == "__main__":
    main_guard(main)
