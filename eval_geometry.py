"""Geometry of the solutions each PLR leads to: angles, error barriers along linear paths, sharpness.

For every PLR and seed, three pairs of solutions (docs/protocol.md section 5): fine-tuned with the low
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

import data as datasets
import models
from analysis.geometry import at_loss, barrier
from core.errors import Parser, UserError, main_guard
from engine import setup
from engine.args import common_parser, setup_torch
from engine.rundir import RunDir

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


def sharpness_at_loss(ft_runs, target):
    """Appendix G: per fine-tuned member with sharpness rows, test error and sharpness at `target` loss."""
    out = []
    for rd, ck in ft_runs:
        rows = rd.metrics()
        for m in ck["members"]:
            train = sorted((r for r in rows if r["member"] == m["member"] and r["split"] == "train"
                            and "sharpness" in r), key=lambda r: r["epoch"])
            if len(train) < 2:  # no sharpness logged (finetune.py --sharpness)
                continue
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
    backend = setup.backend(models.resolve(first["model"]))
    if any((ck["dataset"], ck["model"]) != (first["dataset"], first["model"]) for _, ck in ft_runs + swa_runs):
        raise UserError("the runs mix datasets or models; give the runs of one setup")
    flrs = sorted({m["flr"] for _, ck in ft_runs for m in ck["members"]})
    args.low = flrs[0] if args.low is None else args.low
    args.high = flrs[-1] if args.high is None else args.high
    for name in ("low", "high"):
        if getattr(args, name) not in flrs:
            raise UserError(f"--{name} {getattr(args, name)}: the fine-tuning runs hold FLRs {flrs}")
    args.points = args.points or (3 if args.smoke else datasets.resolve(first["dataset"]).points)
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
    t0, rows = time.perf_counter(), []
    for m, (ang, tr, te) in zip(members, backend.paths(pairs, alphas, args, device)):
        rows.append(dict(m, angle=ang, train_barrier=barrier(tr), test_barrier=barrier(te), alphas=alphas,
                         train_err=tr, test_err=te))
        if len(pairs) <= 50 or len(rows) % 50 == 0:
            print(f"  {m['pair']:8s} PLR {m['plr']:<8g} seed {m['seed']}: angle {ang or float('nan'):.3f} rad, barrier "
                  f"train {rows[-1]['train_barrier']:.2%} test {rows[-1]['test_barrier']:.2%} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    results = {"pairs": rows, "low": args.low, "high": args.high, "seconds": time.perf_counter() - t0,
               "at_loss": sharpness_at_loss(ft_runs, args.at_loss), "at_loss_target": args.at_loss}
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
