"""The adaptive scan: an initial LR for about two training runs, instead of a sweep.

  bash run_all.sh --setup synthetic --preset scan --seeds 3            # what users run (budget 2 runs)
  python scan.py --plrs 1e-3 1e-2 0.1 1 --full 40000 --finetune 20000 --budget 2 --out runs/mine/scan \
      -- --dataset tick --model mlp_si --seed 3 --data_seed 3
  # -> runs/mine/scan/pretrain/plr<PLR>_s<SEED>/ (ordinary train.py runs, each as long as the scan
  #    needed it) and runs/mine/scan/scan.json; report.py --root runs/mine/scan then labels and picks

Every PLR of the grid starts with a short run (--first, default a 32nd of the full pre-training);
then only the PLRs whose regime is still undecided are continued, their length doubled, those in the
middle of the bracket around the 1|2 boundary first, until the bracket is decided or the budget
(--budget, in runs of --full + --finetune steps) would be exceeded (analysis/scan.py: the tests and
the plan). A constant-LR run continued to a longer length is the longer run (train.py), so no step
is trained twice; a scan stopped and started again goes on where it stopped and picks the same PLR.
The pick is the smallest regime-2 PLR of a decided bracket, just above the 1|2 boundary, where the
paper finds the best PLRs; an undecided scan names none ("inconclusive"), with the bracket it found
and the budget that would decide it. Off the sphere (--sphere off, the recipe of practical models)
the sweep's rule puts the 1|2 boundary at the best pre-training validation accuracy, and the scan
finds it by successive halving: the better half of the PLRs, by validation accuracy, is continued to
twice the length until one is left.
"""
import contextlib
import os
import sys

from analysis.scan import SCAN_SETS, curve_of, first_length, plan_for
from analysis.sweep import practical
from core.errors import Parser, UserError, main_guard, own_and_train_flags
from core.io import write_json_atomic
from engine import setup
from engine.rundir import RunDir
from engine.stage import StopFlag



def build_parser():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--plrs", type=float, nargs="+", required=True, help="the PLR grid (ELRs), increasing")
    p.add_argument("--full", type=int, required=True, help="the full pre-training length (epochs, or iterations "
                   "for the synthetic setup): no run goes longer")
    p.add_argument("--finetune", type=int, required=True, help="the fine-tuning length: a run of --full + "
                   "--finetune is the unit of --budget")
    p.add_argument("--budget", type=float, default=2.0, help="the most the scan may train, in runs (default 2)")
    p.add_argument("--first", type=int, default=None, help="every PLR's first run (default: a 32nd of --full, "
                   "at least 4 epochs)")
    p.add_argument("--out", required=True, help="the scan's directory (its runs go to OUT/pretrain/)")
    return p


def main():
    own, flags = own_and_train_flags(sys.argv[1:], "--dataset tick --model mlp_si --seed 0")
    args = build_parser().parse_args(own)
    given = [f for f in flags if f.split("=")[0] in SCAN_SETS]
    if given:
        raise UserError(f"{given[0]} is the scan's to set; drop it from train.py's flags")
    plrs = args.plrs
    if args.budget <= 0 or args.budget != args.budget:
        raise UserError(f"--budget {args.budget}: give a positive number of runs")
    if any(not p > 0 for p in plrs) or sorted(set(plrs)) != plrs:
        raise UserError(f"--plrs {' '.join(map(str, plrs))}: give increasing positive ELRs")
    if args.full < 1 or args.finetune < 0:
        raise UserError("--full must be positive and --finetune not negative")
    probe = setup.pretrain_parser().parse_args(flags + ["--lr", str(plrs[0]), "--out", os.devnull])
    _, dataset, backend, recipe = setup.resolve_pretrain(probe)  # the flags, checked before anything is written
    unit = backend.LENGTH  # "iters" or "epochs"
    first = args.first or first_length(args.full, unit)
    run_length = args.full + args.finetune
    if first * len(plrs) > args.budget * run_length:
        raise UserError(f"--budget {args.budget:g}: every PLR's first run of {first} {unit} costs "
                        f"{first * len(plrs) / run_length:.2g} runs; give at least that, fewer PLRs or a smaller --first")
    extra = ["--keep_snapshots", "0"] if unit == "iters" else []
    if unit == "iters":  # 16 evaluations in a first run, for the tests of its curve
        extra += ["--eval_every", str(max(1, first // 16))]
    seed = probe.seed[0]
    name = lambda p: f"plr{p:g}_s{seed}"  # noqa: E731
    os.makedirs(os.path.join(args.out, "pretrain"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    plan = plan_for(practical(recipe))(plrs, args.full, first, args.budget * run_length, None, run_length)
    todo = plan.step(None)
    with StopFlag() as stop:  # SIGTERM between two runs (a run itself checkpoints and exits 143)
        while todo is not None:
            todo = scan_round(plan, todo, flags + extra, unit, args, name, first, stop)
    out = dict(plan.summary(), unit=unit, first=first, full=args.full, run_length=run_length,
               runs={p: name(p) for p in plrs})
    write_json_atomic(os.path.join(args.out, "scan.json"), out)
    pick = f"PLR {plan.pick:g}" if plan.pick is not None else "inconclusive"
    print(f"scan: {pick} ({plan.stopped_because}); bracket {plan.bracket}; cost {out['cost_runs']:.2f} runs of "
          f"{args.budget:g}")


def scan_round(plan, todo, flags, unit, args, name, first, stop):
    """Train every PLR of `todo` to its length, then the plan's next lengths (None: it has stopped)."""
    for p, length in todo.items():
        train_to(flags, p, length, unit, os.path.join(args.out, "pretrain", name(p)),
                 os.path.join(args.out, "logs", f"{name(p)}.log"))
        if stop.set:
            print("SIGTERM: the scan stops here; rerun the same command to go on", flush=True)
            sys.exit(143)
    if plan.chance is None:
        plan.chance = RunDir(os.path.join(args.out, "pretrain", name(plan.plrs[0]))).config()["meta"]["chance"]
    todo = plan.step({p: curve(os.path.join(args.out, "pretrain", name(p)), plan.length[p] or first, todo.get(p),
                               plan.reads) for p in plan.plrs})
    print(f"spent {plan.spent / plan.run_length:.2f} of {args.budget:g} runs; " + (
        "next: " + ", ".join(f"{p:g} to {n}" for p, n in todo.items()) if todo else "done"), flush=True)
    return todo


def train_to(flags, plr, length, unit, out, log):
    """Train (or continue) PLR's run to `length`, its lines into `log`; a run already that long is left
    as it is."""
    rd = RunDir(out)
    if rd.exists() and rd.config()["args"].get(unit, 0) >= length:
        return
    print(f"  PLR {plr:g}: to {length} {unit}", flush=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f):
        setup.pretrain(setup.pretrain_parser().parse_args(flags + ["--lr", str(plr), f"--{unit}", str(length),
                                                                   "--out", out]))


def curve(path, previous, requested, reads):
    """A run's curve (the plan's `reads`) and final train accuracy, up to the length the scan has
    reached for it (its rows beyond belong to a later round of a scan that was restarted)."""
    rd = RunDir(path)
    length = requested or previous
    at = "epoch" if rd.config()["args"].get("epochs") else "step"
    return (*curve_of(rd.metrics(), at, length, reads), length)


if __name__ == "__main__":
    main_guard(main)
