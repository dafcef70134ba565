"""How far can a small sweep's recommendation be trusted? Subsample a big sweep's runs and compare.

  bash run_all.sh --setup synthetic --preset paper && python bench/recommend_bootstrap.py --root runs/synthetic
  python bench/recommend_bootstrap.py --root runs/synthetic --runs 4 --draws 1000 --json boot.json

Draws `--draws` random sets of `--runs` seeds (distinct (data seed, model seed) pairs of the synthetic
example, or model seeds) from the sweep, runs report.py's labelling and recommendation on each set's
results alone, and prints how often the small sweep's recommended PLR lies inside the whole sweep's
recommended range (the PLRs statistically indistinguishable from the best), how often it equals the
whole sweep's recommendation, the distribution of its picks, and how often the small sweep's own range
(given from 3 seeds on) contains the whole sweep's recommended PLR.
"""
import argparse
import json
import os
import random
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from analysis.sweep import add_regimes, read_sweep, summarize  # noqa: E402
from core.errors import UserError, main_guard  # noqa: E402


def recommend(records):
    """report.py's recommended PLR and range on these records alone."""
    summary = summarize(records, "sub")
    add_regimes(summary, records, [])
    return summary["recommended_plr"], summary.get("recommended_range_plrs")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="a finished sweep: ROOT/SETUP with summary.json")
    p.add_argument("--runs", type=int, default=4, help="seeds per small sweep (default 4)")
    p.add_argument("--draws", type=int, default=1000, help="random small sweeps (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args()
    full, records, units, _ = read_sweep(args.root)
    rec, rng = full["recommended_plr"], full.get("recommended_range_plrs") or []
    if not 1 <= args.runs < len(units):
        raise UserError(f"--runs {args.runs}: the sweep has {len(units)} seeds; take fewer")
    by_unit = {u: [r for r in records if (r["seed"], r.get("data_seed")) == u] for u in units}
    rand = random.Random(args.seed)
    picks, inside, equal, covered, has_range = Counter(), 0, 0, 0, 0
    for _ in range(args.draws):
        chosen = rand.sample(units, args.runs)  # distinct seeds: a sweep of that many runs
        pick, sub_range = recommend([r for u in chosen for r in by_unit[u]])
        picks[pick] += 1
        inside += pick in rng
        equal += pick == rec
        if sub_range:
            has_range += 1
            covered += rec in sub_range
    n = args.draws
    print(f"{args.root}: {len(units)} seeds; whole sweep: recommended {rec}, range {rng}")
    print(f"{n} small sweeps of {args.runs} seeds: recommended PLR inside the whole sweep's range "
          f"{inside / n:.1%}, equal to its recommendation {equal / n:.1%}")
    print("  picks: " + ", ".join(f"{k:g}: {v / n:.1%}" for k, v in sorted(picks.items(), key=lambda kv: kv[0] or 0)
                                  if k is not None) + (f", none: {picks[None] / n:.1%}" if None in picks else ""))
    if has_range:
        print(f"  the small sweep's own range contains the whole sweep's recommendation in {covered / has_range:.1%} "
              f"of the {has_range} draws that give a range")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"root": args.root, "seeds": len(units), "runs": args.runs, "draws": n, "recommended": rec,
                       "range": rng, "inside": inside / n, "equal": equal / n,
                       "picks": {str(k): v / n for k, v in picks.items()},
                       "own_range_covers": covered / has_range if has_range else None}, fh, indent=1)


if __name__ == "__main__":
    main_guard(main)
