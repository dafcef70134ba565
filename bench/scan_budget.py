"""How right is the adaptive scan for its budget? Its pick, replayed on finished runs, against the sweep.

  python bench/scan_budget.py --sweep runs/convnet_si_fmnist                     # replay on the sweep's own runs
  python bench/scan_budget.py --sweep runs/synthetic --scans runs/synthetic/scans --json out.json
  # --scans: a folder of real scans (scan.py, budget 4) of the sweep's seeds, replayed at each budget

A constant-LR run's first steps are those of any longer run (the batches are a function of the seed
and the step), so the runs of a sweep hold every scan of its seeds: the adaptive scan
(analysis/scan.py: short runs at every PLR, doubled where undecided; off the sphere, successive
halving on validation accuracy) is replayed on each seed's
pre-training rows, cut at the lengths it asks for, at each --budgets value (in runs of the sweep's
pre-training + fine-tuning length). The sweep's rows must be dense enough for the scan's tests (the
synthetic paper sweep evaluates every 1000 iterations, which a first run of 1250 cannot use): then
--scans names real scans of the sweep's seeds (scan.py with a budget at least the largest here, its
runs evaluated every 78 iterations), replayed instead. Prints, per budget, over the seeds: the share
whose pick lies in the sweep's recommended range (chosen on validation accuracy), within one grid step
of the range, equal to the sweep's recommendation, inconclusive, and the mean cost in runs.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from analysis.scan import Replay, replay  # noqa: E402
from analysis.sweep import key, practical, read_sweep  # noqa: E402
from core.errors import Parser, main_guard  # noqa: E402
from engine.rundir import RunDir  # noqa: E402

BUDGETS = (0.5, 1, 2, 4)


def main():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--sweep", required=True, help="a finished sweep: ROOT/SETUP with summary.json")
    p.add_argument("--scans", default=None, help="real scans of its seeds (scan.py), one folder each, to replay "
                   "instead of the sweep's rows")
    p.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), help="budgets, in runs")
    p.add_argument("--json", default=None, help="also write the table here")
    args = p.parse_args()
    summary, _, units, pt_runs = read_sweep(args.sweep)
    plrs = [key(e["plr"]) for e in summary["per_plr"]]
    cfg = pt_runs[0].config()
    full = cfg["args"].get("epochs") or cfg["args"]["iters"]
    ft = RunDir(os.path.join(args.sweep, "finetune", sorted(os.listdir(os.path.join(args.sweep, "finetune")))[0]))
    run_length = full + (ft.config()["args"].get("epochs") or ft.config()["args"]["iters"])
    off_sphere = practical(cfg["meta"].get("recipe"))  # the scan halves on held-out accuracy
    rec, rng = summary["recommended_plr"], [key(x) for x in summary.get("recommended_range_plrs") or []]
    near = {q for i, q in enumerate(plrs) if any(abs(i - plrs.index(r)) <= 1 for r in rng)}
    print(f"{args.sweep}: {len(units)} seeds, {len(plrs)} PLRs, runs of {run_length} ({full} pre-training); the sweep "
          f"recommends {rec} ({summary.get('selection')}), range {rng}")
    table = []
    for b in args.budgets:
        picks, costs = [], []
        for u in units:
            if args.scans:
                name = f"s{u[0]}" + (f"_d{u[1]}" if u[1] is not None else "")
                folder = os.path.join(args.scans, name, "pretrain")
                source = Replay([RunDir(os.path.join(folder, d)) for d in sorted(os.listdir(folder))], u)
            else:
                source = Replay(pt_runs, u)
            plan = replay(source, plrs, full, run_length, b, cfg["meta"]["chance"], off_sphere)
            picks.append(None if plan.pick is None else key(plan.pick))
            costs.append(plan.spent / run_length)
        n = len(units)
        row = {"budget": b, "in_range": sum(q in rng for q in picks) / n if rng else None,
               "within_one_step": sum(q in near for q in picks) / n if rng else None,
               "equal": sum(q == key(rec) for q in picks) / n if rec is not None else None,
               "inconclusive": sum(q is None for q in picks) / n, "cost_runs": sum(costs) / n,
               "picks": {str(q): picks.count(q) for q in sorted(set(picks), key=lambda q: q or 0)}}
        table.append(row)
        pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
        print(f"budget {b:>4g} runs: in range {pct(row['in_range']):>4}, within one step {pct(row['within_one_step']):>4}, "
              f"= recommended {pct(row['equal']):>4}, inconclusive {pct(row['inconclusive']):>4}, cost "
              f"{row['cost_runs']:.2f} runs  picks " + " ".join(f"{q}:{c}" for q, c in row["picks"].items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"sweep": args.sweep, "recommended_plr": rec, "range": rng, "seeds": len(units),
                       "run_length": run_length, "rows": table}, fh, indent=1)


if __name__ == "__main__":
    main_guard(main)
