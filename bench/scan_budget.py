"""How short can the scan be? The scan's pick at several pre-training budgets against the sweep's answer.

  bash run_all.sh --setup synthetic --preset paper && python bench/scan_budget.py --root runs/synthetic
  python bench/scan_budget.py --root runs/convnet_si_fmnist --fractions 0.1 0.2 0.5 1

A scan (`run_all.sh --preset scan`) pre-trains one seed at every PLR for a fraction of the sweep's
pre-training and labels the regimes from those curves alone (report.py's rule with no fine-tuning
results): the 1|2 boundary, and the smallest regime-2 PLR as its pick. At a constant LR a run's first
steps are those of the longer run (the batches are a function of the seed and the step), so the
sweep's own pre-training rows, cut at each budget, are the scans of each of its seeds. For every
budget this prints, over the sweep's seeds: how often the pick is the sweep's recommended PLR, within
one grid step of it, inside the sweep's recommended range, the 1|2 bracket's agreement, and the
scan's cost in training steps against the whole sweep's.
"""
import argparse
import json
import math
import os
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from analysis.sweep import key, read_sweep, run_steps, scan_pick  # noqa: E402
from core.errors import main_guard  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="a finished sweep: ROOT/SETUP with summary.json")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0],
                   help="budgets, as fractions of the sweep's pre-training")
    p.add_argument("--json", default=None, help="also write the table here")
    args = p.parse_args()
    summary, _, units, pt_rd = read_sweep(args.root)
    plrs = [key(e["plr"]) for e in summary["per_plr"]]
    rec, rng = summary["recommended_plr"], summary.get("recommended_range_plrs")
    b12 = (summary.get("brackets") or {}).get("1|2")
    cfg = pt_rd[0].config()
    pt_len = cfg["args"].get("epochs") or cfg["args"]["iters"]
    meta, sweep_cost = cfg["meta"], run_steps(args.root)
    practical = meta.get("recipe", {}).get("sphere") == "off"
    print(f"{args.root}: {len(units)} seeds, {len(plrs)} PLRs, pre-training {pt_len}; sweep: recommended "
          f"{rec}, range {rng}, 1|2 bracket {b12}; {sweep_cost:,} training steps")
    print(f"{'budget':>8} {'fraction':>8} {'steps/scan':>12} {'of sweep':>9} {'= rec':>6} {'+-1 step':>8} "
          f"{'in range':>8} {'1|2 = sweep':>11}  picks")
    table = []
    for f in args.fractions:
        budget = max(1, math.ceil(pt_len * f))
        picks, brackets, steps = Counter(), Counter(), 0
        for u in units:
            pick, s = scan_pick(pt_rd, u, budget, meta["chance"], practical, with_bracket=True)
            picks[pick[0]] += 1
            brackets[tuple(pick[1] or ())] += 1
            steps = s * len(plrs)
        n = len(units)
        near = sum(c for q, c in picks.items() if q is not None and rec is not None
                   and abs(plrs.index(key(q)) - plrs.index(key(rec))) <= 1)
        row = {"budget": budget, "fraction": f, "steps_per_scan": steps, "of_sweep": steps / sweep_cost,
               "equal": picks[rec] / n if rec is not None else None, "within_one_step": near / n,
               "in_range": (sum(c for q, c in picks.items() if q in (rng or [])) / n) if rng else None,
               "bracket_equal": brackets[tuple(b12 or ())] / n,
               "picks": {str(q): c for q, c in sorted(picks.items(), key=lambda kv: kv[0] or 0)}}
        table.append(row)
        pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
        print(f"{budget:>8} {f:>8.3g} {steps:>12,} {row['of_sweep']:>9.2e} {pct(row['equal']):>6} "
              f"{pct(row['within_one_step']):>8} {pct(row['in_range']):>8} {pct(row['bracket_equal']):>11}  "
              + " ".join(f"{q}:{c}" for q, c in row["picks"].items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"root": args.root, "recommended_plr": rec, "range": rng, "bracket_12": b12,
                       "sweep_cost_steps": sweep_cost, "seeds": len(units), "rows": table}, fh, indent=1)


if __name__ == "__main__":
    main_guard(main)
