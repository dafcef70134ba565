"""Our recommended initial LR against the LR range tests practitioners use (docs/protocol.md section 9).

  python bench/lr_pick.py --setup synthetic --preset paper --n_seeds 10      # the first 10 seed pairs
  python bench/lr_pick.py --setup convnet_si_fmnist --seeds "0 1 2"
  python bench/lr_pick.py --setup synthetic --preset smoke --out /tmp/runs    # seconds (the tests)
  # -> ROOT/SETUP/lr_pick.json and a table; its runs in ROOT/SETUP/lr_pick/

For each seed (a model seed, or a (data seed, model seed) pair where data are drawn per seed) every
method picks an initial LR:
  recommended      report.py's recommended PLR from the whole sweep (bash run_all.sh, all its seeds);
  scan             the same rule on the first fifth of each PLR's pre-training alone, one seed
                   (what `run_all.sh --preset scan` runs: its runs are the prefixes of the sweep's);
  torch_lr_finder  LRFinder.range_test and its steepest-descent suggestion (bench/range_test.py);
  lightning        Tuner.lr_find and its suggestion (bench/range_test.py), both on one thread (the
                   suggestion moves with the summation order, so with the number of threads);
  grid_best        the sweep's PLR with the best mean fine-tuned/SWA accuracy over the compared
                   seeds: an oracle, which knows the results.
A model pre-trained at the picked LR (the setup's pre-training) is then (a) fine-tuned at the setup's
low FLR, (b) averaged with the setup's SWA, and (c) trained instead with a cosine decay from that LR
to zero over the pre-training + fine-tuning steps, the way an lr_find pick is used. Runs at a PLR of
the sweep reuse the sweep's; the others are trained here with the setup's own commands
(`run_all.sh --dry_run`), `--jobs` at a time; finished runs are skipped, so a rerun continues.

Cost: training steps (one optimizer step of one model) spent to make the pick - the whole sweep for
`recommended` and `grid_best`, the scan's runs for `scan`, the steps the range test took.
lr_pick.json: {"setup", "preset", "seeds": [...], "methods": {NAME: {"lrs": [per seed], "cost_steps",
"finetune_acc_mean", "finetune_acc_std", "swa_acc_mean", "swa_acc_std", "cosine_acc_mean",
"cosine_acc_std", "n": seeds with results, "per_seed": [...], "vs_recommended": {"finetune" | "swa" |
"cosine": {"mean", "se", "n"}}}}} (std: over seeds, population std; vs_recommended: the paired
difference from `recommended` on the same seeds, and its standard error).
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
from analysis.sweep import collect, key, per_seed_quality, read_sweep, results_index, run_steps, scan_pick  # noqa: E402
from core.errors import UserError, main_guard  # noqa: E402
from core.io import write_json_atomic  # noqa: E402
from engine.rundir import RunDir  # noqa: E402

SCAN_FRACTION = 5  # run_all.sh's scan: a fifth of the pre-training
RANGE_METHODS = ("torch_lr_finder", "lightning")
METHODS = ("recommended", "scan") + RANGE_METHODS + ("grid_best",)


# ---------------------------------------------------------------- the setup's commands

def dry_run(run_all_args):
    """run_all.sh's commands per stage: {"pretrain": [argv, ...], "finetune": ..., "swa": ..., ...}."""
    out = subprocess.run(["bash", os.path.join(REPO, "run_all.sh"), *run_all_args, "--dry_run"], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode:
        raise UserError(f"run_all.sh {' '.join(run_all_args)}: {out.stderr.strip().splitlines()[-1]}")
    stages, stage = defaultdict(list), None
    for line in out.stdout.splitlines():
        if line.startswith("# "):
            stage = line[2:].strip()
        elif line.strip():
            stages[stage].append(shlex.split(line))
    return stages


def set_flag(argv, flag, *values):
    """argv with `flag`'s values replaced (the flag removed if no values are given)."""
    out, skip = [], False
    for tok in argv:
        if tok == flag:
            skip = True
            continue
        if skip and tok.startswith("--"):
            skip = False
        if not skip:
            out.append(tok)
    return out + ([flag, *map(str, values)] if values else [])


def flag(argv, name):
    """The values of a flag in argv ([] if absent)."""
    if name not in argv:
        return []
    i, vals = argv.index(name) + 1, []
    while i < len(argv) and not argv[i].startswith("--"):
        vals.append(argv[i])
        i += 1
    return vals


def run_commands(cmds, jobs, log_dir):
    """Run [(name, argv)] `jobs` at a time (python = this interpreter); a failure ends it all with the
    run's log named."""
    os.makedirs(log_dir, exist_ok=True)
    pending, running = list(cmds), []
    while pending or running:
        while pending and len(running) < jobs:
            name, argv = pending.pop(0)
            log = open(os.path.join(log_dir, f"{name}.log"), "w")
            proc = subprocess.Popen([sys.executable, *argv[1:]], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, proc, log))
        time.sleep(0.2)
        for item in list(running):
            name, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode:
                    for _, p, _ in running:
                        p.wait()
                    tail = open(log.name).read().strip().splitlines()[-1:]
                    raise UserError(f"{name} failed ({log.name}): {' '.join(tail)}")


# ---------------------------------------------------------------- what the sweep holds

def seed_quality(records, plrs, unit):
    """Per PLR: this seed's mean fine-tuned (every FLR) and SWA test accuracy, or None."""
    return {p: per_seed_quality(records, p).get(unit) for p in plrs}


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setup", required=True, help="a run_all.sh setup (or your own, with --run_all flags)")
    p.add_argument("--preset", default="quick", help="the sweep's preset (run_all.sh)")
    p.add_argument("--out", default="runs", help="ROOT of run_all.sh (the sweep is ROOT/SETUP)")
    p.add_argument("--seeds", default=None, help="the sweep's model seeds (run_all.sh --seeds, quoted list)")
    p.add_argument("--n_seeds", type=int, default=10, help="compare on the sweep's first N seeds (default 10)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time (1 thread each)")
    p.add_argument("--run_all", default="", help="more run_all.sh flags, quoted (e.g. '--data_dir DIR')")
    args = p.parse_args()
    if args.n_seeds < 1 or args.jobs < 1:
        raise UserError("--n_seeds and --jobs must be positive")
    root = os.path.abspath(args.out)
    ra = ["--setup", args.setup, "--preset", args.preset, "--out", root, "--jobs", str(args.jobs),
          *(["--seeds", args.seeds] if args.seeds else []), *shlex.split(args.run_all)]
    sweep = os.path.join(root, args.setup)
    here = os.path.join(sweep, "lr_pick")

    # 1. the sweep (finished runs are skipped)
    print(f"== the sweep: bash run_all.sh {' '.join(map(shlex.quote, ra))} --stages 'pretrain finetune swa'")
    rc = subprocess.run(["bash", os.path.join(REPO, "run_all.sh"), *ra, "--stages", "pretrain finetune swa"],
                        cwd=REPO).returncode
    if rc:
        raise UserError(f"the sweep failed (run_all.sh exit {rc})")
    summary, records, units, pt_rd = read_sweep(sweep)
    index = results_index(records)
    units = units[:args.n_seeds]
    plrs = [key(e["plr"]) for e in summary["per_plr"]]
    regimes = {key(e["plr"]): e["regime"] for e in summary["per_plr"]}
    cmds = dry_run(ra)
    pt0, ft0, swa0 = cmds["pretrain"][0], cmds["finetune"][0], cmds["swa"][0]
    low = key(flag(ft0, "--lr")[0])
    pt_args = pt_rd[0].config()["args"]
    meta = pt_rd[0].config()["meta"]
    per_seed_data = pt_args.get("data_seed") is not None
    length_flag = "--epochs" if pt_args.get("epochs") else "--iters"
    ft_args = RunDir(os.path.join(sweep, "finetune", os.listdir(os.path.join(sweep, "finetune"))[0])).config()["args"]
    pt_len, ft_len = pt_args.get("epochs") or pt_args["iters"], ft_args.get("epochs") or ft_args["iters"]
    sweep_cost = run_steps(sweep)
    print(f"{len(units)} seeds {units}; PLRs {plrs}; low FLR {low:g}; pre-training {pt_len}, fine-tuning {ft_len} "
          f"({length_flag[2:]}); the sweep took {sweep_cost:,} training steps")

    # 2. the picks
    picks, cost = {m: {} for m in args.methods}, {}
    good = [p for p in plrs if regimes.get(p) != "3"]
    quality = {u: seed_quality(records, plrs, u) for u in units}
    if "recommended" in picks:
        rec = summary["recommended_plr"]
        picks["recommended"] = {u: None if rec is None else key(rec) for u in units}
        cost["recommended"] = sweep_cost
    if "grid_best" in picks:
        mean_q = {p: np.mean([quality[u][p] for u in units]) for p in good if all(quality[u][p] is not None
                                                                                for u in units)}
        best = max(mean_q, key=lambda p: (mean_q[p], -p)) if mean_q else None
        picks["grid_best"] = {u: best for u in units}
        cost["grid_best"] = sweep_cost
    if "scan" in picks:
        budget = -(-pt_len // SCAN_FRACTION)
        practical = meta.get("recipe", {}).get("sphere") == "off"
        steps = []
        for u in units:
            pick, s = scan_pick(pt_rd, u, budget, meta["chance"], practical)
            picks["scan"][u] = None if pick is None else key(pick)
            steps.append(s * len(plrs))
        cost["scan"] = int(np.mean(steps))
    ranged = [m for m in RANGE_METHODS if m in picks]
    rt_file = os.path.join(here, "range_tests.json")
    done = json.load(open(rt_file)) if os.path.exists(rt_file) else {}
    if ranged:
        from range_test import range_tests  # the benchmark's own requirements (bench/requirements.txt)
        import torch
        torch.set_num_threads(1)  # the suggestion depends on the summation order: the same on every machine
        flags = set_flag(set_flag(set_flag(set_flag(pt0[2:], "--lr"), "--seed"), "--data_seed"), "--out")
        rt_steps = defaultdict(list)
        for u in units:
            name = f"s{u[0]}" + (f"_d{u[1]}" if u[1] is not None else "")
            if not all(m in done.get(name, {}) for m in ranged):
                t0 = time.perf_counter()
                done[name] = dict(done.get(name, {}), **range_tests(flags, u[0], u[1], methods=ranged))
                print(f"range tests {name}: " + ", ".join(f"{m} {done[name][m]['elr']}" for m in ranged)
                      + f" ({time.perf_counter() - t0:.0f} s)")
                os.makedirs(here, exist_ok=True)
                write_json_atomic(rt_file, done)
            for m in ranged:
                e = done[name][m]["elr"]
                picks[m][u] = None if e is None or not math.isfinite(e) or e <= 0 else key(e)
                rt_steps[m].append(done[name][m]["steps"])
        cost.update({m: int(np.mean(rt_steps[m])) for m in ranged})

    # 3. runs at the picked LRs: pre-training, fine-tuning at the low FLR, SWA where the sweep has none
    # for that (PLR, seed), and the cosine runs for every pick
    need = sorted({(u, lr) for m in picks for u, lr in picks[m].items() if lr is not None})
    waves = [[], []]
    for u, lr in need:
        name = f"plr{lr:g}_s{u[0]}" + (f"_d{u[1]}" if per_seed_data else "")
        base = set_flag(set_flag(pt0, "--lr", lr), "--seed", u[0])
        if per_seed_data:
            base = set_flag(base, "--data_seed", u[1])
        cos = set_flag(set_flag(set_flag(base, "--schedule", "cosine"), length_flag, pt_len + ft_len),
                       "--out", os.path.join(here, "cosine", "pretrain", name))
        waves[0].append((f"cosine_{name}", cos))
        if ("finetune", lr, low) + u in index and ("swa", lr, None) + u in index:
            continue
        pt_dir = os.path.join(here, "pretrain", name)
        waves[0].append((f"pretrain_{name}", set_flag(base, "--out", pt_dir)))
        waves[1].append((f"finetune_{name}", set_flag(set_flag(set_flag(ft0, "--from", pt_dir), "--lr", low),
                                                      "--out", os.path.join(here, "finetune", name))))
        waves[1].append((f"swa_{name}", set_flag(set_flag(swa0, "--from", pt_dir),
                                                 "--out", os.path.join(here, "swa", name))))
    for wave in waves:
        todo = [(n, a) for n, a in wave if not RunDir(flag(a, "--out")[0]).is_complete()]
        print(f"== {len(todo)} of {len(wave)} runs to train, {args.jobs} at a time")
        run_commands(todo, args.jobs, os.path.join(here, "logs"))

    # 4. the table
    index.update(results_index(collect(here)[0]))
    cos = results_index(collect(os.path.join(here, "cosine"))[0])
    out = {"setup": args.setup, "preset": args.preset, "seeds": [list(u) for u in units], "low_flr": low,
           "sweep_recommended_plr": summary["recommended_plr"], "sweep_range": summary.get("recommended_range"),
           "sweep_cost_steps": sweep_cost, "methods": {}}
    for m in picks:
        rows = []
        for u in units:
            lr = picks[m][u]
            rows.append({"seed": list(u), "lr": lr,
                         "finetune_acc": None if lr is None else index.get(("finetune", lr, low) + u),
                         "swa_acc": None if lr is None else index.get(("swa", lr, None) + u),
                         "cosine_acc": None if lr is None else cos.get(("pretrain", lr, None) + u)})
        entry = {"lrs": [r["lr"] for r in rows], "cost_steps": cost.get(m),
                 "n": sum(r["finetune_acc"] is not None for r in rows), "per_seed": rows}
        for k in ("finetune", "swa", "cosine"):
            v = [r[f"{k}_acc"] for r in rows if r[f"{k}_acc"] is not None]
            entry[f"{k}_acc_mean"] = float(np.mean(v)) if v else None
            entry[f"{k}_acc_std"] = float(np.std(v)) if v else None
        out["methods"][m] = entry
    add_paired(out)
    path = os.path.join(sweep, "lr_pick.json")
    write_json_atomic(path, out)
    print_table(out)
    print(f"written: {path}")


def add_paired(out):
    """Each method's accuracy minus `recommended`'s on the same seeds (seed-to-seed spread cancels):
    "vs_recommended": {column: {"mean", "se", "n"}} (se: the standard error of the mean difference)."""
    ref = out["methods"].get("recommended")
    for m, e in out["methods"].items():
        if ref is None or m == "recommended":
            continue
        e["vs_recommended"] = {}
        for k in ("finetune", "swa", "cosine"):
            d = [a[f"{k}_acc"] - b[f"{k}_acc"] for a, b in zip(e["per_seed"], ref["per_seed"])
                 if a[f"{k}_acc"] is not None and b[f"{k}_acc"] is not None]
            e["vs_recommended"][k] = {"mean": float(np.mean(d)) if d else None, "n": len(d),
                                      "se": float(np.std(d) / math.sqrt(len(d) - 1)) if len(d) > 1 else None}


def print_table(out):
    pct = lambda m, s: "-" if m is None else f"{100 * m:.1f} +- {100 * s:.1f}"  # noqa: E731
    print(f"\n{out['setup']} ({out['preset']}), {len(out['seeds'])} seeds; low FLR {out['low_flr']:g}")
    print(f"{'method':16} {'LR picked (per seed)':34} {'cost (steps)':>14} {'fine-tuned %':>14} {'SWA %':>14} "
          f"{'cosine %':>14}")
    for m, e in out["methods"].items():
        lrs = sorted({lr for lr in e["lrs"] if lr is not None})
        shown = ("none" if not lrs else f"{lrs[0]:.3g}" if len(lrs) == 1 else f"{lrs[0]:.3g} .. {lrs[-1]:.3g}") + (
            f" ({sum(lr is None for lr in e['lrs'])} none)" if None in e["lrs"] else "")
        c = "-" if e["cost_steps"] is None else f"{e['cost_steps']:,}"
        print(f"{m:16} {shown:34} {c:>14} {pct(e['finetune_acc_mean'], e['finetune_acc_std']):>14} "
              f"{pct(e['swa_acc_mean'], e['swa_acc_std']):>14} {pct(e['cosine_acc_mean'], e['cosine_acc_std']):>14}")
    print("minus recommended, same seeds (mean +- standard error, percentage points):")
    for m, e in out["methods"].items():
        if "vs_recommended" in e:
            v = e["vs_recommended"]
            print(f"  {m:16} " + "  ".join(f"{k} {pct(v[k]['mean'], v[k]['se'] or 0)}" for k in v))


if __name__ == "__main__":
    main_guard(main)
