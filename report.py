"""Read the run directories of one setup and write summary.json, report.md and the figures.

  python report.py --root runs/synthetic
  # -> runs/synthetic/summary.json (docs/schema.md: per-PLR means over seeds of pre-training,
  #    fine-tuning (per FLR) and SWA results, sorted single-feature accuracies, geometry
  #    and regimes), runs/synthetic/report.md, runs/synthetic/figures/*.{png,pdf}

Reads every complete run under ROOT/pretrain/*, ROOT/finetune/*, ROOT/swa/*, ROOT/geometry/*
(analysis/sweep.py); incomplete runs and missing stages are reported and skipped. Evaluation
computes, plotting reads: the figures are drawn from summary.json alone (analysis/figures.py).
"""
import os

from analysis.figures import draw_all
from analysis.sweep import add_regimes, add_scan, collect, collect_geometry, halving, summarize
from core.errors import Parser, UserError, main_guard
from core.io import write_json_atomic

SELECTION = {
    "validation": "Choices (2A, the recommended PLR and range) are made on validation accuracy (a split of "
                  "the training data, or the data's own validation set); test accuracy is reported, never "
                  "chosen on.",
    "test": "Choices (2A, the recommended PLR and range) are made on test accuracy, as the paper did for its "
            "image setups (the whole training set trained on): the best PLR's test accuracy is then an "
            "optimistic estimate. Hold out a validation set (train.py --val_size, the quick presets) for an "
            "unbiased one.",
    "training curves": "The scan chooses on training curves alone (each PLR's train loss and accuracy); no "
                       "validation or test accuracy is used."}


def pick_text(summary, fmt):
    """The bold line's answer: the PLR, or "inconclusive" for a scan that could not decide."""
    if summary.get("scan") and summary["recommended_plr"] is None:
        return "inconclusive"
    return fmt(summary["recommended_plr"])


def scan_lines(summary):
    """For a scan: how sure its answer is, and what to do when its budget ran out."""
    scan = summary.get("scan")
    if not scan:
        return []
    if scan["pick"] is not None:
        if halving(scan):
            own = next(e["decided_by"] for e in scan["per_plr"] if e["plr"] == scan["pick"])
            how = f"successive halving on one seed's {summary['selection']} accuracy kept the pick to the end ({own})"
        else:
            own = "; ".join(f"{e['plr']:g} {e['decided_by']}" for e in scan["per_plr"] if e["plr"] in scan["bracket"])
            how = f"the two PLRs of the bracket were decided by tests on their training curves ({own})"
        return [f"How sure: {how} after {scan['cost_runs']:.2f} runs. A scan reads one seed's curves: its pick "
                f"can land a grid step away from a full sweep's best (docs/results.md measures how often); for "
                f"the range and its uncertainty, run a sweep (--preset quick or paper).", ""]
    return ["What to do: rerun the same command with a larger --budget (the runs trained so far are continued, "
            "not redone)" + (f", about {scan['runs_to_decide']:.2g} runs" if scan.get("runs_to_decide") else "")
            + ", or extend the grid (--plrs) where the boundary lies.", ""]


def model_text(summary):
    """The model's constructor arguments, e.g. "width=8, 10 classes, 1 input channel"."""
    args = dict(summary.get("model_args") or {})
    classes, channels = args.pop("num_classes", None), args.pop("in_channels", None)
    parts = [f"{k}={v}" for k, v in args.items()] + ([f"{classes} classes"] if classes else []) + (
        [f"{channels} input channel{'s' if channels != 1 else ''}"] if channels else [])
    return ", ".join(parts) or "default arguments"


def recipe_text(recipe):
    """The recipe in words: "sgd, momentum 0, weight decay 0, augmentation none, sphere on, schedule
    constant, batch 16"."""
    if not recipe:
        return "not recorded"
    return (f"{recipe['optimizer']}, momentum {recipe['momentum']:g}, weight decay {recipe['weight_decay']:g}, "
            f"augmentation {recipe['augment']}, sphere {recipe['sphere']}, "
            f"schedule {recipe.get('schedule', 'constant')}"
            + (f", batch {recipe['batch_size']}" if recipe.get("batch_size") else ""))


def write_report_md(summary, root, drawn):
    """A one-page report.md: regimes, boundaries next to the paper's, the recommendation, the figures."""
    fmt = lambda v: "-" if v is None else f"{v:.3g}"
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    b, paper = summary["boundaries"], summary.get("paper_boundaries") or {}
    lines = [f"# {summary['setup']}: which initial learning rate?", "",
             f"Dataset `{summary['dataset']}`, model `{summary['model']}` ({model_text(summary)}), "
             f"{len(summary['plrs'])} PLRs ({fmt(summary['plrs'][0])} ... {fmt(summary['plrs'][-1])}).", "",
             f"Recipe: {recipe_text(summary.get('recipe'))}. Every LR here is for this recipe.", "",
             SELECTION.get(summary.get("selection"), ""), "",
             f"**Recommended initial (pre-training) LR: {pick_text(summary, fmt)}**"
             + (f" - {summary['recommendation_reason']}" if summary.get("recommendation_reason") else ""), "",
             f"**Recommended range: {' .. '.join(map(fmt, summary.get('recommended_range') or [])) or 'none'}**"
             + (f" - {summary['recommended_range_reason']}" if summary.get("recommended_range_reason") else ""), "",
             f"2A vs 2B: {summary.get('two_a_test') or '-'}.", "", *scan_lines(summary),
             "| boundary | detected | bracket | paper |", "|---|---|---|---|"]
    for k in ("1|2", "2A|2B", "2|3"):
        br = (summary.get("brackets") or {}).get(k)
        lines.append(f"| {k} | {fmt(b.get(k))} | {'-' if not br else f'{fmt(br[0])} .. {fmt(br[1])}'} | "
                     f"{fmt(paper.get(k))} |")
    split = "val" if summary.get("selection") == "validation" else "test"
    lines += ["", f"| PLR | regime | score ({split} %, +- s.e.) | PT train loss | PT test % | SWA test % | "
                  f"FT test % (each FLR) | angle FT-low/high |", "|---|---|---|---|---|---|---|---|"]
    for e in summary["per_plr"]:
        ft = " / ".join(pct(s["test_acc"]) for _, s in sorted(e["finetune"].items(), key=lambda kv: float(kv[0])))
        geo, sc = (e.get("geometry") or {}).get("angle_low_high"), e.get("score")
        score = "-" if not sc else pct(sc["mean"]) + (f" +- {100 * sc['se']:.1f}" if sc["se"] is not None else "")
        lines.append(f"| {fmt(e['plr'])} | {e.get('regime') or '-'} | {score} | {fmt(e['pretrain']['train_loss'])} | "
                     f"{pct(e['pretrain']['test_acc'])} | {pct((e['swa'] or {}).get('test_acc'))} | {ft or '-'} | "
                     f"{fmt(geo)} |")
    if summary.get("rule"):
        lines += ["", "## How the regimes are labelled", "", summary["rule"]]
    lines += ["", "## Figures", ""] + [f"![{n}](figures/{n}.png)" for n in drawn]
    if summary.get("missing"):
        lines += ["", "## Missing", ""] + [f"- {n}" for n in summary["missing"]]
    path = os.path.join(root, "report.md")
    with open(f"{path}.tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(f"{path}.tmp", path)
    return path


def main():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="setup directory holding pretrain/, finetune/, swa/")
    p.add_argument("--paper_boundaries", nargs=3, default=None, metavar=("B12", "B2A2B", "B23"),
                   help="the authors' regime boundaries 1|2, 2A|2B, 2|3 for this setup (run_all.sh passes "
                        "them), listed next to the detected ones in report.md; 'none' for one the paper does not have")
    args = p.parse_args()
    paper = None
    if args.paper_boundaries:
        try:
            paper = [None if b.lower() == "none" else float(b) for b in args.paper_boundaries]
        except ValueError:
            raise UserError(f"--paper_boundaries {' '.join(args.paper_boundaries)}: give three numbers or 'none'")
    if not os.path.isdir(args.root):
        raise UserError(f"--root {args.root} is not a directory")
    records, notes = collect(args.root)
    pairs, at_loss, target = collect_geometry(args.root, notes)
    for n in notes:
        print(f"note: {n}")
    if not any(r["stage"] == "pretrain" for r in records):
        raise UserError(f"--root {args.root} holds no complete pre-training run; nothing to report")
    summary = summarize(records, args.root, pairs, paper)
    add_regimes(summary, records, notes)
    add_scan(summary, args.root)
    summary["at_loss"], summary["at_loss_target"] = at_loss, target
    summary["missing"] = notes
    try:
        figdir = os.path.join(args.root, "figures")
        os.makedirs(figdir, exist_ok=True)
        write_json_atomic(os.path.join(args.root, "summary.json"), summary)
    except OSError as e:
        raise UserError(f"cannot write to {args.root}: {e.strerror}")
    drawn = draw_all(summary, figdir)
    report = write_report_md(summary, args.root, drawn)
    print(f"summary: {os.path.join(args.root, 'summary.json')}")
    print(f"report:  {report}")
    print(f"figures: {figdir}/ ({', '.join(drawn)})")
    b, g = summary["boundaries"], lambda v: "none" if v is None else f"{v:.3g}"  # noqa: E731
    print(f"recipe: {recipe_text(summary.get('recipe'))}")
    print(f"regimes: 1|2 {g(b['1|2'])}, 2A|2B {g(b['2A|2B'])}, 2|3 {g(b['2|3'])}; recommended PLR "
          f"{g(summary['recommended_plr'])} ({summary.get('recommendation_reason', 'no regimes')})")
    print(f"{'PLR':>9} {'regime':>6} {'PT train loss':>13} {'PT test':>8} {'SWA test':>8} {'best FT test':>12}  "
          f"top-2 features PT")
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731  (None: not run, as a scan's SWA)
    for e in summary["per_plr"]:
        ft = max((s["test_acc"] for s in e["finetune"].values()), default=None)
        swa = e["swa"]["test_acc"] if e["swa"] else None
        fs = e["pretrain"]["features_sorted"]
        top = f"{fs[0]:.1%} {fs[1]:.1%}" if fs else "-"
        print(f"{e['plr']:9.3g} {e['regime'] or '-':>6} {e['pretrain']['train_loss']:13.3g} "
              f"{pct(e['pretrain']['test_acc']):>8} {pct(swa):>8} {pct(ft):>12}  {top}")


if __name__ == "__main__":
    main_guard(main)
