"""SWA: average N checkpoints of a pre-training run at its PLR and evaluate the average.

The average is not re-projected onto the sphere (a scale-invariant model depends only on its
direction). How the N checkpoints come about is the backend's:

Synthetic example (docs/protocol.md section 7): train.py keeps the weights of the last steps, 100
iterations apart (--keep_snapshots, default 5); SWA-N averages the last N of them per member.

  python swa.py --from runs/synthetic/pretrain/all --n_models 5 --out runs/synthetic/swa/all
  # -> members.jsonl (as the parent's), metrics.jsonl (one train and one test row per member),
  #    checkpoints/final.pt (the averaged weights), results.json

Images (docs/protocol.md section 4): continue pre-training at the PLR from the parent's last epoch E
for N - 1 more epochs (with the batches that longer pre-training would have seen), average the
weights at epochs E, E+1, ..., E+N-1, recompute BN statistics with one pass over the shuffled,
non-augmented training set, evaluate; or (--stride K) average the parent's own kept checkpoints.

Either way the averaging is the stage loop's (engine/stage.py): the equal-weight mean, in float64.

  python swa.py --from runs/convnet_si_cifar10/pretrain/plr1e-3_s0 --n_models 5 \
      --out runs/convnet_si_cifar10/swa/plr1e-3_s0
  # -> metrics.jsonl: the continued members per epoch, then the averages (rows with "swa": true);
  #    checkpoints/final.pt: the averages with their BN statistics; --keep_window also keeps
  #    checkpoints/epoch_NNNN.pt of the continuation (NNNN = epochs after E)
"""
import models
from core.errors import Parser, main_guard
from engine import setup
from engine.args import check_positive, common_parser, image_parser, recipe_flags, resolve_recipe, setup_torch
from engine.rundir import RunDir, load_parent
from engine.stage import run_stage


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser(), image_parser()])
    p.add_argument("--from", dest="parent", required=True, help="pre-training run directory")
    p.add_argument("--n_models", type=int, default=5, help="number of checkpoints to average (N): the "
                   "synthetic setup's last snapshots, or epochs E .. E+N-1 for images")
    p.add_argument("--stride", type=int, default=None,
                   help="module backend: instead of continuing, average the parent's own kept checkpoints, this "
                        "many epochs apart, ending at its last epoch (train.py --save_epochs; the ViT recipe: "
                        "--n_models 5 --stride 2 averages epochs 492, 494, ..., 500 of 500)")
    p.add_argument("--keep_window", action="store_true",
                   help="module backend: keep the continued weights of every epoch (checkpoints/epoch_NNNN.pt)")
    recipe_flags(p)
    return p


def main():
    args = build_parser().parse_args()
    check_positive(args.n_models, "--n_models")
    parent, _, ckpt = load_parent(args.parent)
    backend = setup.backend(models.resolve(ckpt["model"]))
    setup.refuse_foreign(args, backend)
    recipe = resolve_recipe(args, ckpt["recipe"])  # the continuation trains with the parent's recipe
    backend.check_recipe(recipe)
    stage, window = backend.swa_stage(args, ckpt, parent)
    device = setup_torch(args)
    speed = backend.speed(args, device)
    data = backend.parent_data(ckpt, args, device)
    members = [dict(m, parent_member=m["member"], swa_n=args.n_models) for m in ckpt["members"]]
    meta = dict({k: ckpt[k] for k in ("model", "model_args", "dataset", "batch_size", "data")}, recipe=recipe,
                members=members, parent=parent.path, parent_epoch=ckpt["done"], **window)
    rd = RunDir(args.out)
    if rd.start(args, "swa", members, parent=parent.path, meta=setup.run_meta(meta)) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    trainer = backend.trainer("swa", members, ckpt["state"], data, meta, args, device, speed)
    rd.write_results(dict(run_stage(rd, stage, trainer, meta), **window))
    print(f"done: {args.out}")


if __name__ == "__main__":
    main_guard(main)
