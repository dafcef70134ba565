"""Geometry of the solutions each PLR leads to: angles, error barriers along linear paths, sharpness.

For every PLR and seed, three pairs of solutions (PROTOCOL.md section 5): fine-tuned with the low
and with the high FLR (low_high), SWA and the high-FLR one (swa_high), SWA and the low-FLR one
(swa_low). For each pair:
- angle: arccos of the cosine between the SI weight vectors, unit-normalised, float64;
- the linear path (1 - a) A + a B at --points values of a (21 for images, 11 for the synthetic
  setup), each point re-projected onto the sphere; image models get their BN statistics recomputed
  at each point (one pass over the shuffled, non-augmented training set), then
  train error (training set, no augmentation, BN in train mode) and test error (eval mode);
- barrier: max over a of error(a) minus the line between the endpoint errors, clipped at 0.
Image fine-tuning runs made with `finetune.py --sharpness` also get the appendix-G comparison: test
error and sharpness (mean mini-batch gradient norm over the training set) interpolated linearly in
the training loss at the moment it first falls to --at_loss (6e-4).

  python eval_geometry.py --finetune runs/synthetic/finetune/d0-4 runs/synthetic/finetune/d5-9 \
      --swa runs/synthetic/swa/d0-4 runs/synthetic/swa/d5-9 --out runs/synthetic/geometry/all
  # -> runs/synthetic/geometry/all/results.json: {"pairs": [{"plr", "seed", "data_seed", "pair",
  #    "angle", "train_barrier", "test_barrier", "alphas", "train_err", "test_err"}, ...],
  #    "at_loss": [...]}; report.py averages them per PLR into summary.json's "geometry".

--low/--high default to the smallest and largest FLR the fine-tuning runs hold. A complete output
is skipped; an interrupted one is recomputed (it holds no training state).
"""
import time

import torch

from models import SCALE_INVARIANT
from utils.args import Parser, UserError, common_parser, main_guard, setup_torch
from utils.geometry import angle, at_loss, barrier, interpolate
from utils.image_stage import bn_batches, eval_model, evaluate as evaluate_images, run_data
from utils.population import evaluate, group_data
from utils.rundir import RunDir
from utils.sphere import project_rows_, recompute_bn_stats

PAIRS = ("low_high", "swa_high", "swa_low")


def build_parser():
    p = Parser(description=__doc__.split("\n")[0], parents=[common_parser()])
    p.add_argument("--finetune", nargs="+", required=True, help="fine-tuning run directories")
    p.add_argument("--swa", nargs="*", default=[], help="SWA run directories (for the swa_* pairs)")
    p.add_argument("--low", type=float, default=None, help="low FLR (default: the smallest fine-tuned)")
    p.add_argument("--high", type=float, default=None, help="high FLR (default: the largest fine-tuned)")
    p.add_argument("--points", type=int, default=None, help="points on each path, endpoints included "
                   "(default 21 for images, 11 for the synthetic setup; --smoke 3)")
    p.add_argument("--at_loss", type=float, default=6e-4, help="training loss of the sharpness comparison")
    p.add_argument("--data_dir", default=None, help="images: dataset folder (default: the runs')")
    return p


def key(m):
    return (m["plr"], m["seed"], m.get("data_seed"))


def load_runs(paths, kind):
    """[(RunDir, final checkpoint)] of complete runs of one kind."""
    out = []
    for path in paths:
        rd = RunDir(path)
        if not rd.exists():
            raise UserError(f"{path} is not a run directory (no config.json)")
        if rd.config().get("stage") != kind:
            raise UserError(f"{path} is a {rd.config().get('stage')} run; expected {kind}")
        out.append((rd, rd.final(kinds=[kind])))
    return out


def endpoints(ft_runs, swa_runs, low, high):
    """The pairs to measure: list of (pair name, key, (ckpt, i), (ckpt, j))."""
    ft, swa = {}, {}
    for _, ck in ft_runs:
        for i, m in enumerate(ck["members"]):
            ft[(key(m), m["flr"])] = (ck, i)
    for _, ck in swa_runs:
        for i, m in enumerate(ck["members"]):
            swa[key(m)] = (ck, i)
    pairs = []
    for k in sorted({k for k, _ in ft}, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2])):
        a, b, s = ft.get((k, low)), ft.get((k, high)), swa.get(k)
        for name, x, y in (("low_high", a, b), ("swa_high", s, b), ("swa_low", s, a)):
            if x is not None and y is not None:
                pairs.append((name, k, x, y))
    return pairs


def tick_paths(pairs, alphas, device):
    """Synthetic setup: errors along every path at once; returns per pair (angle, train_err, test_err)."""
    w = lambda end, k: end[0]["state"][k][end[1]]
    A = {k: torch.stack([w(x, k) for _, _, x, _ in pairs]) for k in ("w1", "w2", "w3")}  # (K, ...)
    B = {k: torch.stack([w(y, k) for _, _, _, y in pairs]) for k in ("w1", "w2")}
    radius = pairs[0][2][0]["radius"]
    data = group_data([k[2] for _, k, _, _ in pairs], device)  # (K, N, 32): each pair its data seed
    errs = {"train": [], "test": []}
    for a in alphas:
        st = {k: ((1 - a) * A[k].double() + a * B[k].double()).float() for k in ("w1", "w2")}
        K = len(pairs)
        project_rows_(st["w1"].view(K, -1), st["w2"].view(K, -1), radius)
        st["w3"] = A["w3"]
        st = {k: v.to(device) for k, v in st.items()}
        for split in errs:
            errs[split].append(1 - evaluate(st, K, data[f"x_{split}"], data[f"y_{split}"])[1])
    angles = [angle({k: A[k][i] for k in ("w1", "w2")}, {k: B[k][i] for k in ("w1", "w2")})
              for i in range(len(pairs))]
    return [(angles[i], [e[i].item() for e in errs["train"]], [e[i].item() for e in errs["test"]])
            for i in range(len(pairs))]


def image_path(ckpt_a, i, ckpt_b, j, alphas, data, device):
    """One pair of image solutions: (angle, train_err, test_err) along the re-projected linear path."""
    name = ckpt_a["model"]
    si = SCALE_INVARIANT[name]
    model = eval_model(ckpt_a, device)
    sa, sb = ckpt_a["states"][i], ckpt_b["states"][j]
    # the path's coordinates: the SI weights (convs) for SI models, every float parameter otherwise
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    wa, wb = {n: sa[n] for n in names}, {n: sb[n] for n in names}
    radius = ckpt_a["members"][i]["radius"] if si else None
    member = ckpt_a["members"][i]
    train_err, test_err = [], []
    for a in alphas:
        state = dict(sa, **interpolate(wa, wb, a, radius))
        model.load_state_dict(state)
        recompute_bn_stats(model, bn_batches(data, ckpt_a["batch_size"], member["seed"]))
        test_err.append(1 - evaluate_images(model, data["xn_test"], data["y_test"], device)[1])
        train_err.append(1 - evaluate_images(model, data["xn_train"], data["y_train"], device, train_mode=True)[1])
    return angle(wa, wb) if si else None, train_err, test_err


def sharpness_at_loss(ft_runs, target):
    """Appendix G: per fine-tuned member with sharpness rows, test error and sharpness at `target` loss."""
    out = []
    for rd, ck in ft_runs:
        rows = rd.metrics()
        for m in ck["members"]:
            train = sorted((r for r in rows if r["member"] == m["member"] and r["split"] == "train"
                            and "sharpness" in r), key=lambda r: r["epoch"])
            test = {r["epoch"]: r for r in rows if r["member"] == m["member"] and r["split"] == "test"}
            train = [r for r in train if r["epoch"] in test]
            if len(train) < 2:
                continue
            losses = [r["loss"] for r in train]
            out.append({"plr": m["plr"], "flr": m["flr"], "seed": m["seed"], "data_seed": m.get("data_seed"),
                        "test_err": at_loss(losses, [1 - test[r["epoch"]]["acc"] for r in train], target),
                        "sharpness": at_loss(losses, [r["sharpness"] for r in train], target)})
    return out


def main():
    args = build_parser().parse_args()
    ft_runs = load_runs(args.finetune, "finetune")
    swa_runs = load_runs(args.swa, "swa")
    first = ft_runs[0][1]
    image = first["dataset"] != "tick"
    if any((ck["dataset"], ck["model"]) != (first["dataset"], first["model"]) for _, ck in ft_runs + swa_runs):
        raise UserError("the runs mix datasets or models; give the runs of one setup")
    flrs = sorted({m["flr"] for _, ck in ft_runs for m in ck["members"]})
    args.low = flrs[0] if args.low is None else args.low
    args.high = flrs[-1] if args.high is None else args.high
    for name in ("low", "high"):
        if getattr(args, name) not in flrs:
            raise UserError(f"--{name} {getattr(args, name)}: the fine-tuning runs hold FLRs {flrs}")
    args.points = args.points or (3 if args.smoke else 21 if image else 11)
    if args.points < 2:
        raise UserError(f"--points must be >= 2 (both endpoints), got {args.points}")
    args.eval_every = args.checkpoint_every = None  # not used: geometry holds no training state
    pairs = endpoints(ft_runs, swa_runs, args.low, args.high)
    if not pairs:
        raise UserError("no pair of solutions to compare: the runs share no (PLR, seed) with both endpoints")
    device = setup_torch(args)
    members = [{"member": n, "pair": p, "plr": k[0], "seed": k[1], "data_seed": k[2]}
               for n, (p, k, _, _) in enumerate(pairs)]
    rd = RunDir(args.out)
    if rd.start(args, "geometry", members, parent=[r.path for r, _ in ft_runs + swa_runs]) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return
    alphas = [i / (args.points - 1) for i in range(args.points)]
    print(f"{len(pairs)} pairs ({', '.join(f'{p} {sum(q[0] == p for q in pairs)}' for p in PAIRS)}), FLRs low "
          f"{args.low:g} / high {args.high:g}, {args.points} points per path, on {device}")
    t0 = time.perf_counter()
    if image:
        data = run_data(first, args.data_dir, device)
        paths = []
        for n, (p, k, (ca, i), (cb, j)) in enumerate(pairs):
            paths.append(image_path(ca, i, cb, j, alphas, data, device))
            print(f"  {p:8s} PLR {k[0]:<8g} seed {k[1]}: angle {paths[-1][0] or float('nan'):.3f} rad, barrier "
                  f"train {barrier(paths[-1][1]):.2%} test {barrier(paths[-1][2]):.2%} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    else:
        paths = tick_paths(pairs, alphas, device)
    rows = [dict(m, angle=ang, train_barrier=barrier(tr), test_barrier=barrier(te), alphas=alphas,
                 train_err=tr, test_err=te) for m, (ang, tr, te) in zip(members, paths)]
    results = {"pairs": rows, "low": args.low, "high": args.high, "seconds": time.perf_counter() - t0,
               "at_loss": sharpness_at_loss(ft_runs, args.at_loss) if image else [], "at_loss_target": args.at_loss}
    rd.write_results(results)
    for p in PAIRS:
        sel = [r for r in rows if r["pair"] == p]
        if sel:
            mean = lambda k: sum(r[k] for r in sel if r[k] is not None) / len(sel)
            print(f"{p:8s}: {len(sel)} pairs, mean angle {mean('angle'):.3f} rad, train barrier "
                  f"{mean('train_barrier'):.2%}, test barrier {mean('test_barrier'):.2%}")
    print(f"done: {args.out} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main_guard(main)
