"""Our recommended initial LR against what practitioners do instead, scored on seeds the choice never
saw, at the cost of each (docs/protocol.md section 9).

  python bench/lr_pick.py --setup synthetic --preset paper --eval_seeds "100 101 102 103 104 105 106 107 108 109"
  python bench/lr_pick.py --setup convnet_si_fmnist --seeds "0 1 2" --eval_seeds "10 11 12"
  python bench/lr_pick.py --setup synthetic --preset smoke --eval_seeds "7 8" --out /tmp/runs   # seconds (tests)
  # -> ROOT/SETUP/lr_pick.json, ROOT/SETUP/figures/lr_free.png and a table; its runs in ROOT/SETUP/lr_pick/

The sweep (run_all.sh with the setup's --seeds) makes our choice, on validation accuracy; every method
is then scored by training fresh seeds that are not the sweep's (--eval_seeds: model seed S, and data
seed S where data are drawn per seed), on their test sets:
  recommended      the sweep's recommended PLR
  scan             the adaptive scan's pick (scan.py, what run_all.sh --preset scan runs) on the sweep's grid,
                   lengths and data, at the sweep's first seed, with --budget runs (default 2)
  torch_lr_finder  LRFinder.range_test's steepest-descent suggestion (bench/range_test.py), per eval seed
  lightning        Tuner.lr_find's suggestion, per eval seed (both on one thread: the suggestion moves with
                   the summation order)
  prodigy, dadaptation, schedulefree   learning-rate-free optimizers through their packages
                   (bench/arms.py); on a scale-invariant setup also on the sphere (NAME_sphere)
  default          a good fixed default (bench/arms.py)
  grid_best        an oracle: the grid's PLR with the best mean test accuracy after fine-tuning at the low
                   FLR on the eval seeds themselves (it knows the results it is scored on)
A pick is trained three ways on every eval seed, with the setup's own commands: pre-training at the
pick then fine-tuning at the setup's low FLR (the paper's protocol), SWA, and a cosine decay from the
pick to zero over the pre-training + fine-tuning length. Each method's `final_acc` is what its user
would ship: ours (and the oracle) the fine-tuned model, the range tests the cosine run, the others
their own schedule. Finished runs are skipped, so a rerun continues where it stopped.

Costs, in runs (one pre-training + fine-tuning run of the setup, counted in optimizer steps of one
model): the sweep all its runs (pre-training, every FLR, SWA's continuation); the scan its runs; a
range test its steps plus the run it picks for; an LR-free or default arm 1.
"""
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
from analysis.scan import SCAN_SETS  # noqa: E402
from analysis.sweep import collect, key, read_sweep, results_index, run_steps  # noqa: E402
from arms import ARMS, LR_FREE, PACKAGES  # noqa: E402
from core import setups  # noqa: E402
from core.errors import Parser, UserError, main_guard  # noqa: E402
from core.io import write_json_atomic  # noqa: E402
from engine.rundir import RunDir  # noqa: E402

PICKS = ("recommended", "scan", "torch_lr_finder", "lightning", "grid_best")
RANGE_TESTS = ("torch_lr_finder", "lightning")
METHODS = PICKS[:4] + ARMS + PICKS[4:]
KIND = {"recommended": "pick", "scan": "pick", "torch_lr_finder": "pick", "lightning": "pick", "grid_best": "oracle",
        "default": "default", **{a: "lr_free" for a in LR_FREE}}
REQUIRES = {"torch_lr_finder": "torch_lr_finder", "lightning": "pytorch_lightning", **PACKAGES}


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


# ---------------------------------------------------------------- the sweep, the scan and what they cost

class Setup:
    """The setup's commands (run_all.sh --dry_run), lengths and the unit of its costs."""

    def __init__(self, run_all_args, sweep_dir):
        cmds = dry_run(run_all_args)
        self.pt0, self.ft0, self.swa0 = cmds["pretrain"][0], cmds["finetune"][0], cmds["swa"][0]
        self.low = key(flag(self.ft0, "--lr")[0])
        pt_run = RunDir(os.path.join(sweep_dir, "pretrain", sorted(os.listdir(os.path.join(sweep_dir, "pretrain")))[0]))
        ft_dir = os.path.join(sweep_dir, "finetune")
        ft_run = RunDir(os.path.join(ft_dir, sorted(os.listdir(ft_dir))[0]))
        pt_args, ft_args = pt_run.config()["args"], ft_run.config()["args"]
        self.per_seed_data = pt_args.get("data_seed") is not None
        self.length_flag = "--iters" if pt_args.get("iters") else "--epochs"
        self.pt_len = pt_args.get("epochs") or pt_args["iters"]
        self.ft_len = ft_args.get("epochs") or ft_args["iters"]
        self.meta = pt_run.config()["meta"]
        # one run, in optimizer steps of one model: its pre-training and fine-tuning steps
        last = lambda rd: max(r["step"] for r in rd.metrics())  # noqa: E731
        self.pt_steps, self.ft_steps = last(pt_run), last(ft_run)
        self.run_steps = self.pt_steps + self.ft_steps
        self.train_flags = set_flag(set_flag(set_flag(set_flag(self.pt0[2:], "--lr"), "--seed"), "--data_seed"),
                                    "--out")

    def name(self, lr, u):
        """A run's name: its PLR (None: a population of every PLR) and its seed."""
        return ("" if lr is None else f"plr{lr:g}_") + f"s{u[0]}" + (f"_d{u[1]}" if self.per_seed_data else "")

    def pretrain(self, lr, u, out, **more):
        argv = set_flag(set_flag(self.pt0, "--lr", lr), "--seed", u[0])
        if self.per_seed_data:
            argv = set_flag(argv, "--data_seed", u[1])
        for k, v in more.items():
            argv = set_flag(argv, f"--{k}", v)
        return set_flag(argv, "--out", out)


def units(seeds, per_seed_data):
    """Seeds as (model seed, data seed) units: data seed = model seed where data are drawn per seed."""
    return [(s, s if per_seed_data else None) for s in seeds]


# ---------------------------------------------------------------- main

def main():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--setup", required=True, help="a run_all.sh setup (or your own, with --run_all flags)")
    p.add_argument("--preset", default="quick", help="the sweep's preset (run_all.sh)")
    p.add_argument("--out", default="runs", help="ROOT of run_all.sh (the sweep is ROOT/SETUP)")
    p.add_argument("--seeds", default=None, help="the sweep's model seeds (run_all.sh --seeds, quoted list)")
    p.add_argument("--eval_seeds", required=True, help="the held-out seeds every method is scored on (quoted list, "
                   "at least 3 outside the sweep's model and data seeds; data seed = model seed where data are "
                   "drawn per seed)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"of {' '.join(METHODS)}")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time (1 thread each)")
    p.add_argument("--budget", type=float, default=2.0, help="the adaptive scan's budget, in runs (default 2)")
    p.add_argument("--run_all", default="", help="more run_all.sh flags, quoted (e.g. '--data_dir DIR')")
    args = p.parse_args()
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        raise UserError(f"--methods {bad[0]}: unknown; known: {' '.join(METHODS)}")
    missing = [REQUIRES[m] for m in args.methods if m in REQUIRES and not _importable(REQUIRES[m])]
    if missing:
        raise UserError(f"the package {missing[0]} is missing: pip install -r bench/requirements.txt")
    try:
        eval_seeds = [int(s) for s in args.eval_seeds.split()]
    except ValueError:
        raise UserError(f"--eval_seeds {args.eval_seeds!r}: give non-negative integers")
    if args.jobs < 1 or not eval_seeds or min(eval_seeds) < 0 or len(set(eval_seeds)) != len(eval_seeds):
        raise UserError("--jobs must be positive and --eval_seeds distinct non-negative integers")
    table = setups.resolve(args.setup, args.preset, custom=args.setup not in setups.names())
    sweep_seeds = [int(x) for x in args.seeds.split()] if args.seeds else table["seeds"]
    overlap = sorted(set(eval_seeds) & (set(sweep_seeds) | set(table["data_seeds"])))
    if overlap:
        raise UserError(f"--eval_seeds {' '.join(map(str, overlap))}: the sweep uses these seeds; give held-out ones")
    if len(eval_seeds) < 3:
        raise UserError(f"--eval_seeds: give at least 3 held-out seeds (got {len(eval_seeds)})")
    root = os.path.abspath(args.out)
    ra = ["--setup", args.setup, "--preset", args.preset, "--out", root, "--jobs", str(args.jobs),
          *(["--seeds", args.seeds] if args.seeds else []), *shlex.split(args.run_all)]
    sweep = os.path.join(root, args.setup)
    here = os.path.join(sweep, "lr_pick")

    # 1. the sweep (finished runs are skipped): our choice, on validation accuracy
    print(f"== the sweep: bash run_all.sh {' '.join(map(shlex.quote, ra))} --stages 'pretrain finetune swa'")
    if subprocess.run(["bash", os.path.join(REPO, "run_all.sh"), *ra, "--stages", "pretrain finetune swa"],
                      cwd=REPO).returncode:
        raise UserError("the sweep failed (run_all.sh)")
    summary, records, sweep_units, _ = read_sweep(sweep)
    s = Setup(ra, sweep)
    evals = units(eval_seeds, s.per_seed_data)
    plrs = [key(e["plr"]) for e in summary["per_plr"]]
    print(f"sweep seeds {sweep_units}, eval seeds {evals}; PLRs {plrs}; low FLR {s.low:g}; one run = "
          f"{s.run_steps:,} steps ({s.pt_len} + {s.ft_len} {s.length_flag[2:]})")

    # 2. the picks and their costs
    picks, cost, outcome = {}, {}, {}  # outcome: what the scan said (an inconclusive scan picks nothing)
    if "recommended" in args.methods:
        rec = summary["recommended_plr"]
        picks["recommended"] = {u: None if rec is None else key(rec) for u in evals}
        cost["recommended"] = run_steps(sweep) / s.run_steps
    if "scan" in args.methods:  # the adaptive scan (scan.py) at this sweep's size, on its first seed
        scan = adaptive_scan(s, plrs, sweep_units[0], args.budget, args.jobs, here)
        picks["scan"] = {u: None if scan["pick"] is None else key(scan["pick"]) for u in evals}
        cost["scan"] = scan_cost(scan)
        outcome["scan"] = {k: scan[k] for k in ("pick", "bracket", "stopped_because")}
    ranged = [m for m in RANGE_TESTS if m in args.methods]
    if ranged:
        tests = range_tests(s, evals, ranged, here)
        for m in ranged:
            picks[m] = {u: tests[u][m]["pick"] for u in evals}
            cost[m] = 1 + float(np.mean([tests[u][m]["steps"] for u in evals])) / s.run_steps

    # 3. the eval seeds' grid (pre-training and fine-tuning at the low FLR: the oracle's, and most picks'),
    # then SWA and the cosine runs of every pick, then the arms
    grid = heldout_grid(s, plrs, evals, args.jobs, here)
    if "grid_best" in args.methods:
        means = {p: np.mean([grid.get(("finetune", p, s.low) + u) for u in evals]) for p in plrs
                 if all(grid.get(("finetune", p, s.low) + u) is not None for u in evals)}
        best = max(means, key=lambda p: (means[p], -p)) if means else None
        picks["grid_best"], cost["grid_best"] = {u: best for u in evals}, None
    index = train_picks(s, picks, evals, grid, args.jobs, here)
    arms = train_arms(s, [m for m in args.methods if m in ARMS], evals, args.jobs, here)

    # 4. the table
    out = score(args, s, summary, sweep_units, evals, picks, cost, index, arms)
    for m, said in outcome.items():
        out["methods"][m]["outcome"] = said
    write_json_atomic(os.path.join(sweep, "lr_pick.json"), out)
    draw(summary, out, os.path.join(sweep, "figures"))
    print_table(out)
    print(f"written: {os.path.join(sweep, 'lr_pick.json')}")


def _importable(module):
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module set to None in sys.modules: not importable
        return False


def scan_cost(scan):
    """The scan's cost in runs: its own runs, plus the final training of its pick (its run continued to
    the full length and fine-tuned: one run less what the scan already trained of it); an inconclusive
    scan gives no model and costs its runs."""
    if scan["pick"] is None:
        return scan["cost_runs"]
    trained = next(e["steps"] for e in scan["per_plr"] if e["plr"] == scan["pick"])
    return scan["cost_runs"] + 1 - trained / scan["run_length"]


def scan_flags(train_flags, jobs):
    """A sweep's train.py flags as scan.py takes them: without those it sets itself (the lengths ...)."""
    for f in SCAN_SETS:
        train_flags = set_flag(train_flags, f)
    return set_flag(train_flags, "--threads", max(1, jobs))


def adaptive_scan(s, plrs, unit, budget, jobs, here):
    """scan.py on the sweep's grid, lengths and data, at one of its seeds: its scan.json."""
    out = os.path.join(here, "scan")
    if not os.path.exists(os.path.join(out, "scan.json")):
        seed = ["--seed", str(unit[0])] + (["--data_seed", str(unit[1])] if unit[1] is not None else [])
        argv = ["python", os.path.join(REPO, "scan.py"), "--plrs", *map(str, plrs), "--full", str(s.pt_len),
                "--finetune", str(s.ft_len), "--budget", str(budget), "--out", out, "--",
                *scan_flags(s.train_flags, jobs), *seed]
        print("== the adaptive scan: " + " ".join(map(shlex.quote, argv[1:])))
        run_commands([("scan", argv)], 1, os.path.join(here, "logs"))
    return json.load(open(os.path.join(out, "scan.json")))


def range_tests(s, evals, methods, here):
    """Each eval seed's range-test suggestions (bench/range_test.py), cached in range_tests.json."""
    from range_test import range_tests as run_tests  # the benchmark's own requirements (bench/requirements.txt)
    import torch
    torch.set_num_threads(1)  # the suggestion depends on the summation order: the same on every machine
    path = os.path.join(here, "range_tests.json")
    done = json.load(open(path)) if os.path.exists(path) else {}
    out = {}
    for u in evals:
        name = f"s{u[0]}" + (f"_d{u[1]}" if u[1] is not None else "")
        if not all(m in done.get(name, {}) for m in methods):
            t0 = time.perf_counter()
            done[name] = dict(done.get(name, {}), **run_tests(s.train_flags, u[0], u[1], methods=methods))
            print(f"range tests {name}: " + ", ".join(f"{m} {done[name][m]['elr']}" for m in methods)
                  + f" ({time.perf_counter() - t0:.0f} s)")
            os.makedirs(here, exist_ok=True)
            write_json_atomic(path, done)
        out[u] = {m: {"pick": (None if done[name][m]["elr"] is None or not math.isfinite(done[name][m]["elr"])
                               or done[name][m]["elr"] <= 0 else key(done[name][m]["elr"])),
                      "steps": done[name][m]["steps"]} for m in methods}
    return out


def heldout_grid(s, plrs, evals, jobs, here):
    """Pre-training at every PLR of the grid and fine-tuning at the low FLR, on every eval seed: the
    oracle's table, and the runs of the picks that are grid PLRs. Returns results_index of them."""
    waves = [[], []]
    for u in evals:  # a population trains every PLR of a seed in one run; a module one run per PLR
        runs = [(s.name(None, u), plrs)] if s.per_seed_data else [(s.name(lr, u), [lr]) for lr in plrs]
        for name, lrs in runs:
            pt = os.path.join(here, "pretrain", name)
            waves[0].append((f"pretrain_{name}", set_flag(s.pretrain(lrs[0], u, pt), "--lr", *lrs)))
            waves[1].append((f"finetune_{name}", set_flag(set_flag(set_flag(s.ft0, "--from", pt), "--lr", s.low),
                                                          "--out", os.path.join(here, "finetune", name))))
    for wave in waves:
        todo = [(n, a) for n, a in wave if not RunDir(flag(a, "--out")[0]).is_complete()]
        print(f"== the eval seeds' grid: {len(todo)} of {len(wave)} runs to train, {jobs} at a time")
        run_commands(todo, jobs, os.path.join(here, "logs"))
    return results_index(collect(here)[0])


def train_picks(s, picks, evals, grid, jobs, here):
    """For every pick: pre-training and fine-tuning at the low FLR where the eval seeds' grid has no run,
    SWA of the pre-training run that holds it, and the cosine run. Returns results_index over all of
    them (the cosine runs under the stage "cosine")."""
    need = sorted({(u, lr) for m in picks for u, lr in picks[m].items() if lr is not None}, key=str)
    waves, parents = [[], []], {}
    for u, lr in need:
        name = s.name(lr, u)
        cos = os.path.join(here, "cosine", "pretrain", name)
        waves[0].append((f"cosine_{name}", s.pretrain(lr, u, cos, schedule="cosine",
                                                      **{s.length_flag[2:]: s.pt_len + s.ft_len})))
        if ("finetune", lr, s.low) + u in grid:  # the grid's run of this seed (and PLR) holds it
            grid_name = s.name(None if s.per_seed_data else lr, u)
            parents[os.path.join(here, "pretrain", grid_name)] = grid_name
            continue
        pt = os.path.join(here, "picks", "pretrain", name)
        parents[pt] = name
        waves[0].append((f"pretrain_{name}", s.pretrain(lr, u, pt)))
        waves[1].append((f"finetune_{name}", set_flag(set_flag(set_flag(s.ft0, "--from", pt), "--lr", s.low),
                                                      "--out", os.path.join(here, "picks", "finetune", name))))
    for pt, name in parents.items():
        waves[1].append((f"swa_{name}", set_flag(set_flag(s.swa0, "--from", pt),
                                                 "--out", os.path.join(here, "picks", "swa", name))))
    for wave in waves:
        todo = [(n, a) for n, a in wave if not RunDir(flag(a, "--out")[0]).is_complete()]
        print(f"== the picks: {len(todo)} of {len(wave)} runs to train, {jobs} at a time")
        run_commands(todo, jobs, os.path.join(here, "logs"))
    index = dict(grid)
    index.update(results_index(collect(os.path.join(here, "picks"))[0]))
    index.update({("cosine",) + k[1:]: v for k, v in results_index(collect(os.path.join(here, "cosine"))[0]).items()
                  if k[0] == "pretrain"})
    return index


def train_arms(s, arms, evals, jobs, here):
    """Each arm (bench/arms.py) on each eval seed, for one run's steps; on a scale-invariant setup each
    learning-rate-free one also on the sphere. Returns {method: {unit: result}}."""
    on_sphere = s.meta["recipe"]["sphere"] == "on"
    variants = [(a, False) for a in arms] + [(a, True) for a in arms if a in LR_FREE and on_sphere]
    cmds, where = [], {}
    for arm, sphere in variants:
        method = arm + ("_sphere" if sphere else "")
        for u in evals:
            path = os.path.join(here, "arms", f"{method}_s{u[0]}" + (f"_d{u[1]}" if u[1] is not None else "") + ".json")
            where[(method, u)] = path
            if not os.path.exists(path):
                argv = ["python", os.path.join(HERE, "arms.py"), "--arm", arm, "--seed", str(u[0]), "--steps",
                        str(s.run_steps), "--out", path] + (["--sphere"] if sphere else []) + \
                       (["--data_seed", str(u[1])] if u[1] is not None else []) + ["--", *s.train_flags]
                cmds.append((os.path.basename(path)[:-5], argv))
    os.makedirs(os.path.join(here, "arms"), exist_ok=True)
    print(f"== the arms: {len(cmds)} of {len(where)} runs to train, {jobs} at a time")
    run_commands(cmds, jobs, os.path.join(here, "logs"))
    out = defaultdict(dict)
    for (method, u), path in where.items():
        out[method][u] = json.load(open(path))
    return out


def score(args, s, summary, sweep_units, evals, picks, cost, index, arms):
    """lr_pick.json: every method's picks, effective LRs, cost and held-out accuracies."""
    out = {"setup": args.setup, "preset": args.preset, "selection": summary.get("selection"),
           "sweep_seeds": [list(u) for u in sweep_units], "eval_seeds": [list(u) for u in evals], "low_flr": s.low,
           "run_steps": s.run_steps, "sweep_recommended_plr": summary["recommended_plr"],
           "sweep_range": summary.get("recommended_range"), "methods": {}}
    for m, chosen in picks.items():
        at = lambda u, stage, flr=None: None if chosen[u] is None else index.get((stage, chosen[u], flr) + u)  # noqa
        rows = [{"seed": list(u), "lr": chosen[u], "finetune_acc": at(u, "finetune", s.low), "swa_acc": at(u, "swa"),
                 "cosine_acc": at(u, "cosine")} for u in evals]
        final = "cosine" if m in RANGE_TESTS else "finetune"
        for r in rows:
            r["final_acc"] = r[f"{final}_acc"]
        out["methods"][m] = method_entry(KIND[m], rows, cost.get(m), [r["lr"] for r in rows], None)
    for m, res in arms.items():
        rows = [{"seed": list(u), "final_acc": res[u]["test_acc"], "val_acc": res[u]["val_acc"],
                 "effective_lr": res[u]["effective_lr"]} for u in evals]
        out["methods"][m] = method_entry(KIND[m.removesuffix("_sphere")], rows, 1.0, None,
                                         [r["effective_lr"] for r in rows], sphere=m.endswith("_sphere"))
    add_paired(out)
    return out


def method_entry(kind, rows, cost, lrs, effective, sphere=None):
    entry = {"kind": kind, "lrs": lrs, "effective_lrs": effective, "cost_runs": cost, "per_seed": rows}
    if sphere is not None:
        entry["sphere"] = sphere
    for k in ("final", "finetune", "swa", "cosine"):
        v = [r[f"{k}_acc"] for r in rows if r.get(f"{k}_acc") is not None]
        entry[f"{k}_acc_mean"] = float(np.mean(v)) if v and len(v) == len(rows) else None
        if k == "final":
            entry["final_acc_std"] = float(np.std(v)) if v and len(v) == len(rows) else None
    return entry


def add_paired(out):
    """Each method's final accuracy minus `recommended`'s on the same eval seeds (the seed-to-seed spread
    cancels): "vs_recommended": {"mean", "se", "n"} (se: the standard error of the mean difference)."""
    ref = out["methods"].get("recommended")
    for m, e in out["methods"].items():
        if ref is None or m == "recommended":
            continue
        d = [a["final_acc"] - b["final_acc"] for a, b in zip(e["per_seed"], ref["per_seed"])
             if a.get("final_acc") is not None and b.get("final_acc") is not None]
        e["vs_recommended"] = {"mean": float(np.mean(d)) if d else None, "n": len(d),
                               "se": float(np.std(d) / math.sqrt(len(d) - 1)) if len(d) > 1 else None}


def draw(summary, out, figdir):
    """figures/lr_free.png: the sweep's regimes against the PLR, each method's LR marked on them."""
    from analysis.figures import lr_pick_figure  # matplotlib only here
    os.makedirs(figdir, exist_ok=True)
    lr_pick_figure(summary, out, figdir)


def print_table(out):
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    print(f"\n{out['setup']} ({out['preset']}): choice on {out['selection']} accuracy of sweep seeds "
          f"{out['sweep_seeds']}, scored on held-out seeds {out['eval_seeds']}; low FLR {out['low_flr']:g}")
    print(f"{'method':22} {'kind':8} {'LR (ELR)':22} {'cost (runs)':>11} {'final test %':>13} {'vs ours (pp)':>14}  "
          f"FT / SWA / cosine %")
    for m, e in out["methods"].items():
        lrs = sorted(v for v in (e["lrs"] or e["effective_lrs"] or []) if v is not None)
        shown = "inconclusive" if (e.get("outcome") or {}).get("pick", 0) is None else "-" if not lrs else f"{lrs[0]:.3g}" if len(set(lrs)) == 1 else f"{lrs[0]:.3g} .. {lrs[-1]:.3g}"
        v = e.get("vs_recommended") or {}
        vs = "-" if v.get("mean") is None else f"{100 * v['mean']:+.1f} +- {100 * (v['se'] or 0):.1f}"
        c = "-" if e["cost_runs"] is None else f"{e['cost_runs']:.3g}"
        print(f"{m:22} {e['kind']:8} {shown:22} {c:>11} {pct(e['final_acc_mean']):>13} {vs:>14}  "
              f"{pct(e['finetune_acc_mean'])} / {pct(e['swa_acc_mean'])} / {pct(e['cosine_acc_mean'])}")


if __name__ == "__main__":
    main_guard(main)
