"""SWA: average the last N weight snapshots of a pre-training run and evaluate the average.

Synthetic example (PROTOCOL.md section 7): train.py keeps the final weights every 100 iterations
(--keep_snapshots, default 5); SWA-N averages the last N of them per member. The average is not
re-projected onto the sphere (the model is scale-invariant, so only its direction matters).

  python swa.py --from runs/synthetic/pretrain/all --n_models 5 --out runs/synthetic/swa/all
  # -> members.jsonl (as the parent's), metrics.jsonl (one train and one test row per member),
  #    checkpoints/final.pt (the averaged weights), results.json

Images (PROTOCOL.md section 4): continue pre-training at the PLR from the parent's last epoch E
for N - 1 more epochs (with the batches that longer pre-training would have seen), average the
weights at epochs E, E+1, ..., E+N-1 with torch.optim.swa_utils.AveragedModel, recompute BN
statistics with one pass over the shuffled, non-augmented training set, evaluate.

  python swa.py --from runs/convnet_si_cifar10/pretrain/plr1e-3_s0 --n_models 5 \
      --out runs/convnet_si_cifar10/swa/plr1e-3_s0
  # -> metrics.jsonl: the continued members per epoch, then the averages (rows with "swa": true);
  #    checkpoints/final.pt: the averages with their BN statistics; --keep_window also keeps
  #    checkpoints/epoch_NNNN.pt of the continuation (NNNN = epochs after E)
"""
from utils import checkpoint
from utils.args import (Parser, UserError, check_positive, common_parser, image_parser, main_guard,
                        resolve_epoch_schedule, setup_torch)
from utils.image_step import speed_switches
from utils.image_stage import parent_setup, run_image_stage
from models.mlp import MLPPopulation
from utils.population import eval_rows, final_metrics, group_data
from utils.rundir import RunDir, load_parent


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser(), image_parser()])
    p.add_argument("--from", dest="parent", required=True, help="pre-training run directory")
    p.add_argument("--n_models", type=int, default=5, help="number of checkpoints to average (N): the "
                   "synthetic setup's last snapshots, or epochs E .. E+N-1 for images")
    p.add_argument("--keep_window", action="store_true",
                   help="images: keep the continued weights of every epoch (checkpoints/epoch_NNNN.pt)")
    return p


def main_images(args, parent, ckpt):
    resolve_epoch_schedule(args, args.n_models - 1)
    device = setup_torch(args)
    speed = speed_switches(args, device)
    data = parent_setup(ckpt, args, device)
    members = [dict(m, parent_member=m["member"], swa_n=args.n_models) for m in ckpt["members"]]
    rd = RunDir(args.out)
    if rd.start(args, "swa", members, parent=parent.path) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    window = list(range(ckpt["epoch"], ckpt["epoch"] + args.n_models))
    print(f"SWA-{args.n_models} of {len(members)} {ckpt['model']}: continue at the PLR from epoch {window[0]} of "
          f"{parent.path} to epoch {window[-1]}, average epochs {window}, recompute BN statistics")
    meta = dict({k: ckpt[k] for k in ("model", "model_args", "dataset", "batch_size", "data")},
                parent=parent.path, swa_epochs=window)
    results = run_image_stage(rd, kind="swa", members=members, inits=ckpt["states"], salt=0,
                              epoch0=ckpt["epoch"], epochs=args.n_models - 1, data=data, meta=meta,
                              batch_size=ckpt["batch_size"], device=device, eval_every=args.eval_every,
                              checkpoint_every=args.checkpoint_every, swa=True,
                              save_epochs=set(range(1, args.n_models)) if args.keep_window else set(),
                              **speed)
    rd.write_results(dict(results, swa_epochs=window))
    print(f"done: {args.out}")


def average_snapshots(snapshots, n):
    """Mean of the last n snapshots (dict step -> {w1, w2}), member by member, accumulated in float64."""
    steps = sorted(snapshots)[-n:]
    return {k: (sum(snapshots[s][k].double() for s in steps) / n).float() for k in ("w1", "w2")}, steps


def main():
    args = build_parser().parse_args()
    check_positive(args.n_models, "--n_models")
    parent, pconfig, ckpt = load_parent(args.parent)
    if ckpt["dataset"] != "tick":
        return main_images(args, parent, ckpt)
    if args.keep_window or args.data_dir:
        raise UserError(f"--keep_window and --data_dir are for image runs; {args.parent} is a synthetic run")
    available = len(ckpt["snapshots"])
    if args.n_models > available:
        raise UserError(f"--n_models {args.n_models}: {args.parent} kept only {available} snapshots "
                        f"(train.py --keep_snapshots)")
    device = setup_torch(args)
    members = [dict(m, parent_member=m["member"], swa_n=args.n_models) for m in ckpt["members"]]
    rd = RunDir(args.out)
    if rd.start(args, "swa", members, parent=parent.path) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    avg, steps = average_snapshots(ckpt["snapshots"], args.n_models)
    state = {"w1": avg["w1"], "w2": avg["w2"], "w3": ckpt["state"]["w3"]}
    print(f"SWA of {len(members)} models over the snapshots at iterations {steps}")
    pop = MLPPopulation(*(state[k].to(device) for k in ("w1", "w2", "w3")), groups=ckpt["groups"])
    data = group_data([s[0] for s in ckpt["streams"]], device)
    rows, digest = eval_rows(pop, data, ckpt["step"], [m["lr"] for m in members])
    print(f"SWA-{args.n_models} | {digest}")
    rd.truncate_metrics(-1)
    rd.append_metrics(rows)
    meta = {k: ckpt[k] for k in ("model", "model_args", "dataset", "radius", "groups", "streams", "batch_size")}
    checkpoint.save(rd.final_ckpt, dict(meta, kind="swa", step=ckpt["step"], snapshots={}, state=state,
                                        members=members, parent=parent.path, swa_steps=steps))
    rd.write_results({"step": ckpt["step"], "swa_steps": steps, "members": final_metrics(rows, len(members))})
    print(f"done: {args.out}")


if __name__ == "__main__":
    main_guard(main)
