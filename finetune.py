"""Fine-tune a pre-training run at fixed FLR(s): every member of the parent at every FLR.

The model, data, batch size, sphere and recipe are the parent run's (recipe flags given here
override it, e.g. --optimizer adam); only the LR and the length change.

Synthetic example (docs/protocol.md section 7): 20000 iterations per FLR; each fine-tuned member keeps
its parent's data stream (new shuffles).

  python finetune.py --from runs/synthetic/pretrain/all --lr 3.16e-5 7.5e-3 \
      --out runs/synthetic/finetune/all
  # -> one member per (parent member, FLR); members.jsonl names the parent member, its PLR and
  #    the FLR; same files as train.py

Images (docs/protocol.md section 4): from the parent's last epoch (or --from_epoch, a checkpoint kept
with train.py --save_epochs), 200 epochs at each FLR.

A longer --epochs / --iters on a finished run (constant LR, the same flags otherwise) continues it.

  python finetune.py --from runs/convnet_si_cifar10/pretrain/plr1e-3_s0 --lr 1e-5 5e-4 \
      --out runs/convnet_si_cifar10/finetune/plr1e-3_s0
"""
import data as datasets
import models
from core.errors import Parser, UserError, main_guard
from engine import checkpoint, setup
from engine.args import check_lrs, common_parser, image_parser, recipe_flags, resolve_recipe, setup_torch
from engine.rundir import RunDir, load_parent
from engine.stage import run_stage


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser(), image_parser()])
    p.add_argument("--from", dest="parent", required=True, help="pre-training run directory")
    p.add_argument("--lr", type=float, nargs="+", required=True, help="fine-tuning ELR(s) (FLR)")
    recipe_flags(p)
    p.add_argument("--iters", type=int, default=None, help="population backend: SGD iterations (default 20000; "
                   "--smoke 100)")
    p.add_argument("--epochs", type=int, default=None, help="module backend: epochs (default 200; --smoke 2)")
    p.add_argument("--from_epoch", type=int, default=None,
                   help="module backend: start from the parent's checkpoint of this epoch (default: its last)")
    p.add_argument("--save_epochs", type=int, nargs="*", default=[],
                   help="module backend: also keep the weights at these epochs (checkpoints/epoch_NNNN.pt)")
    p.add_argument("--sharpness", action="store_true", help="module backend: log the sharpness (mean "
                   "mini-batch gradient norm over the training set) at every evaluation, for eval_geometry.py")
    return p


def main():
    args = build_parser().parse_args()
    check_lrs(args.lr)
    parent, _, ckpt = load_parent(args.parent)
    record = models.resolve(ckpt["model"])
    backend = setup.backend(record)
    setup.refuse_foreign(args, backend)
    if args.from_epoch is not None:
        path = parent.kept_ckpt("epoch", args.from_epoch)
        ckpt = checkpoint.load(path, kinds=["pretrain"])
        if ckpt is None:
            raise UserError(f"--from_epoch {args.from_epoch}: {path} does not exist (train.py --save_epochs)")
    recipe = resolve_recipe(args, ckpt["recipe"])
    backend.check_recipe(recipe)
    if (recipe["sphere"] == "on") != (ckpt["members"][0]["radius"] is not None):
        raise UserError(f"--sphere {recipe['sphere']}: the parent was trained with the sphere "
                        f"{ckpt['recipe']['sphere']}; fine-tuning keeps it")
    backend.resolve_schedule(args, datasets.resolve(ckpt["dataset"]), "finetune")
    device = setup_torch(args)
    speed = backend.speed(args, device)
    data = backend.parent_data(ckpt, args, device)
    members = [{"member": i, "plr": pm["plr"], "flr": flr, "seed": pm["seed"], "data_seed": pm["data_seed"],
                "parent_member": pm["member"], "lr": flr, "radius": pm["radius"]}
               for i, (pm, flr) in enumerate((pm, flr) for pm in ckpt["members"] for flr in args.lr)]
    meta = dict({k: ckpt[k] for k in ("model", "model_args", "dataset", "batch_size", "data")}, recipe=recipe,
                members=members, parent=parent.path, parent_epoch=ckpt["done"])
    rd = RunDir(args.out)
    if rd.start(args, "finetune", members, parent=parent.path, meta=setup.run_meta(meta),
                length=backend.LENGTH) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    print(f"fine-tuning {len(ckpt['members'])} {record.name} x {len(args.lr)} FLRs = {len(members)} from "
          f"{ckpt['unit']} {ckpt['done']} of {parent.path}, {backend.length_text(args)} on {device}")
    for m in members[:50]:
        print(f"  member {m['member']}: PLR {m['plr']:g}, seed {m['seed']}, FLR {m['lr']:g}" +
              (f", lr = FLR x R^2 = {m['lr'] * m['radius'] ** 2:.4g}" if m["radius"] else ""))
    index = [m["parent_member"] for m in members]  # members stay group-major: each parent member at every FLR
    state = {k: v[index] for k, v in ckpt["state"].items()}
    trainer = backend.trainer("finetune", members, state, data, meta, args, device, speed)
    rd.write_results(run_stage(rd, backend.stage("finetune", args), trainer, meta))
    print(f"done: {args.out}")


if __name__ == "__main__":
    main_guard(main)
