"""SWA: average the last N weight snapshots of a pre-training run and evaluate the average.

Synthetic example (PROTOCOL.md section 7): train.py keeps the final weights every 100 iterations
(--keep_snapshots, default 5); SWA-N averages the last N of them per member. The average is not
re-projected onto the sphere (the model is scale-invariant, so only its direction matters).

  python swa.py --from runs/synthetic/pretrain/all --n_models 5 --out runs/synthetic/swa/all
  # -> members.jsonl (as the parent's), metrics.jsonl (one train and one test row per member),
  #    checkpoints/final.pt (the averaged weights), results.json
"""
from utils import checkpoint
from utils.args import Parser, UserError, check_positive, common_parser, main_guard, setup_torch
from models.mlp import MLPPopulation
from utils.population import eval_rows, final_metrics, group_data
from utils.rundir import RunDir, load_parent


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser()])
    p.add_argument("--from", dest="parent", required=True, help="pre-training run directory")
    p.add_argument("--n_models", type=int, default=5, help="number of last snapshots to average (N)")
    return p


def average_snapshots(snapshots, n):
    """Mean of the last n snapshots (dict step -> {w1, w2}), member by member, accumulated in float64."""
    steps = sorted(snapshots)[-n:]
    return {k: (sum(snapshots[s][k].double() for s in steps) / n).float() for k in ("w1", "w2")}, steps


def main():
    args = build_parser().parse_args()
    check_positive(args.n_models, "--n_models")
    parent, pconfig, ckpt = load_parent(args.parent)
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
