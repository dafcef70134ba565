"""Read the run directories of one setup and write summary.json and the figures.

  python report.py --root runs/synthetic
  # -> runs/synthetic/summary.json (DESIGN.md schema: per-PLR means over seeds of pre-training,
  #    fine-tuning (per FLR) and SWA results, sorted single-feature accuracies, geometry
  #    and regimes), runs/synthetic/report.md, runs/synthetic/figures/*.{png,pdf}

Reads every complete run under ROOT/pretrain/*, ROOT/finetune/*, ROOT/swa/* (results.json,
members.jsonl, features.jsonl); incomplete runs and missing stages are reported and skipped.
Evaluation computes, plotting reads: the figures are drawn from summary.json alone
(utils/figures.py).
"""
import glob
import os
from collections import defaultdict

import numpy as np

from utils.args import Parser, UserError, main_guard
from utils.figures import draw_all
from utils.regimes import label_regimes, recommended_range
from utils.rundir import RunDir, read_jsonl, write_json_atomic

STAGES = ("pretrain", "finetune", "swa")
BOUNDARIES = ("1|2", "2A|2B", "2|3")
FLR_KEY = "%.3g"


def collect(root):
    """Per-member records of every complete run: dicts with stage, plr, flr, seeds, metrics, features."""
    records, notes = [], []
    for stage in STAGES:
        dirs = sorted(d for d in glob.glob(os.path.join(root, stage, "*")) if os.path.isdir(d))
        if not dirs:
            notes.append(f"no {stage} runs")
        for d in dirs:
            rd = RunDir(d)
            if not rd.exists() or not rd.is_complete():
                notes.append(f"{d} is not complete; skipped")
                continue
            config, members, results = rd.config(), rd.members(), rd.results()
            feats_path = os.path.join(d, "features.jsonl")
            feats = {r["member"]: r for r in read_jsonl(feats_path)} if os.path.exists(feats_path) else {}
            curves = defaultdict(list)  # pre-training: each member's train-loss curve, for the regimes
            if stage == "pretrain":
                for r in rd.metrics():
                    if r["split"] == "train" and not r.get("swa"):
                        curves[r["member"]].append((r["step"], r["loss"]))
            if not feats:
                notes.append(f"{d} has no features.jsonl (run eval_fourier.py --run {d})")
            for m, res in zip(members, results["members"]):
                f = feats.get(m["member"], {})
                records.append(dict(m, **res, stage=stage, run=d, setup=config.get("settings", {}),
                                    meta=config.get("meta", {}),
                                    features=f.get("features"), bands=f.get("bands"),
                                    band_split_groups=f.get("band_split_groups"),
                                    curve=curves.get(m["member"])))
    return records, notes


def collect_geometry(root, notes):
    """Pair rows of every complete geometry run under ROOT/geometry/ (eval_geometry.py), the
    appendix-G rows (test error and sharpness at a fixed training loss) and that loss."""
    pairs, at_loss, target = [], [], None
    dirs = sorted(d for d in glob.glob(os.path.join(root, "geometry", "*")) if os.path.isdir(d))
    if not dirs:
        notes.append("no geometry runs (eval_geometry.py)")
    for d in dirs:
        rd = RunDir(d)
        if not rd.exists() or not rd.is_complete():
            notes.append(f"{d} is not complete; skipped")
            continue
        res = rd.results()
        pairs += res["pairs"]
        at_loss += res.get("at_loss", [])
        target = res.get("at_loss_target", target)
    return pairs, at_loss, target


def mean_std(values):
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std())


def sorted_features(recs):
    """Mean over members of the descending-sorted single-feature accuracies (rank 1 first)."""
    feats = [r["features"] for r in recs if r.get("features")]
    if not feats:
        return None, None
    a = -np.sort(-np.asarray(feats), axis=1)
    return a.mean(0).tolist(), a.std(0).tolist()


def band_means(recs):
    """Mean over members of each band group's accuracy (groups every member has), or None."""
    bands = [r["bands"] for r in recs if r.get("bands")]
    if not bands:
        return None
    keys = [k for k in bands[0] if all(k in b for b in bands)]
    return {k: float(np.mean([b[k] for b in bands])) for k in keys}


def band_split_means(recs):
    """The band-split study (eval_fourier.py --band_splits; paper Fig. 16): for each low/mid split s
    every member has, the mean over members of the accuracy on the low group 1..s and on the mid
    group s+1..M: {"4": {"low": .., "mid": ..}, ...} in increasing s, or None."""
    groups = [r.get("band_split_groups") or {} for r in recs]
    if not recs or not all(groups):
        return None
    out = {}
    for s in sorted(set.intersection(*(set(g) for g in groups)), key=int):
        accs = [[(r.get("bands") or {}).get(g[s][part]) for r, g in zip(recs, groups)] for part in ("low", "mid")]
        if all(a is not None for a in accs[0] + accs[1]):
            out[s] = {"low": float(np.mean(accs[0])), "mid": float(np.mean(accs[1]))}
    return out or None


def stage_summary(recs):
    out = {}
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        out[key], out[f"{key}_std"] = mean_std([r[key] for r in recs])
    out["n_seeds"] = len(recs)
    out["features_sorted"], out["features_sorted_std"] = sorted_features(recs)
    out["bands"] = band_means(recs)
    out["band_splits"] = band_split_means(recs)
    return out


def geometry_summary(pairs, plr):
    """summary.json's per-PLR geometry: means over seeds of angle and barriers for each pair kind."""
    out = {}
    for kind in ("low_high", "swa_high", "swa_low"):
        sel = [p for p in pairs if p["plr"] == plr and p["pair"] == kind]
        for q in ("angle", "train_barrier", "test_barrier"):
            vals = [p[q] for p in sel if p[q] is not None]
            out[f"{q}_{kind}"] = float(np.mean(vals)) if vals else None
    return out if any(v is not None for v in out.values()) else None


def summarize(records, root, pairs=(), paper=None):
    by = defaultdict(list)
    for r in records:
        by[(r["stage"], r["plr"], r["flr"])].append(r)
    plrs = sorted({r["plr"] for r in records if r["stage"] == "pretrain"})
    first = next((r for r in records if r["stage"] == "pretrain"), {})
    per_plr = []
    for plr in plrs:
        entry = {"plr": plr, "regime": None, "pretrain": stage_summary(by[("pretrain", plr, None)])}
        flrs = sorted({r["flr"] for r in records if r["stage"] == "finetune" and r["plr"] == plr})
        entry["finetune"] = {FLR_KEY % f: stage_summary(by[("finetune", plr, f)]) for f in flrs}
        swa = by.get(("swa", plr, None))
        entry["swa"] = stage_summary(swa) if swa else None
        entry["geometry"] = geometry_summary(pairs, plr)
        per_plr.append(entry)
    setup = first.get("setup", {})
    summary = {"setup": os.path.basename(os.path.normpath(root)), "dataset": setup.get("dataset"),
               "model": setup.get("model"), "plrs": plrs,
               "boundaries": {"1|2": None, "2A|2B": None, "2|3": None}, "recommended_plr": None,
               "per_plr": per_plr}
    summary["paper_boundaries"] = dict(zip(BOUNDARIES, paper)) if paper else None
    return summary


def mean_curve(recs):
    """The members' train-loss curves averaged step by step (steps all of them have), or None."""
    curves = [dict(r["curve"]) for r in recs if r.get("curve")]
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return [(s, float(np.mean([c[s] for c in curves]))) for s in steps]


def add_regimes(summary, records, notes):
    """Fill regime, boundaries, recommended_plr (utils/regimes.py; the rule is in the README)."""
    per = summary["per_plr"]
    meta = next(r["meta"] for r in records if r["stage"] == "pretrain")
    chance = meta.get("chance")
    if chance is None:
        notes.append("the pre-training runs record no chance level (config.json meta); regimes not labelled")
        return
    curves = []
    for e in per:  # the second half of pre-training: still falling (regime 1) or flat (regime 2)?
        c = mean_curve([r for r in records if r["stage"] == "pretrain" and r["plr"] == e["plr"]])
        curves.append([p for p in c if p[0] >= c[-1][0] / 2] if c else None)
    stats = [seed_quality(records, e["plr"]) for e in per]
    try:
        out = label_regimes(
            [e["plr"] for e in per], [e["pretrain"]["train_loss"] for e in per],
            [e["pretrain"]["train_acc"] for e in per], chance,
            ft_acc=[{k: s["test_acc"] for k, s in e["finetune"].items()} or None for e in per],
            swa_acc=[e["swa"]["test_acc"] if e["swa"] else None for e in per], loss_curves=curves,
            pt_test_acc=[e["pretrain"]["test_acc"] for e in per],
            practical=meta.get("recipe", {}).get("sphere") == "off",  # off the sphere: PROTOCOL.md section 6
            quality_stats=stats)
    except ValueError as err:
        notes.append(f"regimes not labelled: {err}")
        return
    for e, label in zip(per, out["labels"]):
        e["regime"] = label
    summary.update(boundaries=out["boundaries"], brackets=out["brackets"], recommended_plr=out["recommended_plr"],
                   recommendation_reason=out["reason"], two_a_test=out["two_a_test"], rule=out["rule"])
    # among the PLRs that do not diverge, as the recommendation itself
    rng = recommended_range([e["plr"] for e in per], [None if e["regime"] == "3" else q for e, q in zip(per, stats)])
    summary.update(recommended_range=rng["range"], recommended_range_plrs=rng["plrs"],
                   recommended_range_reason=rng["reason"])


def seed_quality(records, plr):
    """(mean, std, seeds) over the PLR's seeds of the quality the recommendation ranks by (each seed's
    mean test accuracy over its fine-tuned members, every FLR, and its SWA member), or None."""
    per_seed = defaultdict(list)
    for r in records:
        if r["plr"] == plr and r["stage"] in ("finetune", "swa") and np.isfinite(r["test_acc"]):
            per_seed[(r["seed"], r.get("data_seed"))].append(r["test_acc"])
    if not per_seed:
        return None
    q = [float(np.mean(v)) for v in per_seed.values()]
    return float(np.mean(q)), float(np.std(q)), len(q)


def write_report_md(summary, root, drawn):
    """A one-page report.md: regimes, boundaries next to the paper's, the recommendation, the figures."""
    fmt = lambda v: "-" if v is None else f"{v:.3g}"
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    b, paper = summary["boundaries"], summary.get("paper_boundaries") or {}
    lines = [f"# {summary['setup']}: which initial learning rate?", "",
             f"Dataset `{summary['dataset']}`, model `{summary['model']}`, {len(summary['plrs'])} PLRs "
             f"({fmt(summary['plrs'][0])} ... {fmt(summary['plrs'][-1])}).", "",
             f"**Recommended initial (pre-training) LR: {fmt(summary['recommended_plr'])}**"
             + (f" - {summary['recommendation_reason']}" if summary.get("recommendation_reason") else ""), "",
             f"**Recommended range: {' .. '.join(map(fmt, summary.get('recommended_range') or [])) or 'none'}**"
             + (f" - {summary['recommended_range_reason']}" if summary.get("recommended_range_reason") else ""), "",
             f"2A vs 2B: {summary.get('two_a_test') or '-'}.", "",
             "| boundary | detected | bracket | paper |", "|---|---|---|---|"]
    for k in ("1|2", "2A|2B", "2|3"):
        br = (summary.get("brackets") or {}).get(k)
        lines.append(f"| {k} | {fmt(b.get(k))} | {'-' if not br else f'{fmt(br[0])} .. {fmt(br[1])}'} | "
                     f"{fmt(paper.get(k))} |")
    lines += ["", "| PLR | regime | PT train loss | PT test % | SWA test % | FT test % (each FLR) | angle FT-low/high |",
              "|---|---|---|---|---|---|---|"]
    for e in summary["per_plr"]:
        ft = " / ".join(pct(s["test_acc"]) for _, s in sorted(e["finetune"].items(), key=lambda kv: float(kv[0])))
        geo = (e.get("geometry") or {}).get("angle_low_high")
        lines.append(f"| {fmt(e['plr'])} | {e.get('regime') or '-'} | {fmt(e['pretrain']['train_loss'])} | "
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
                        "them), drawn next to the detected ones; 'none' for one the paper does not have")
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
    b = summary["boundaries"]
    print(f"regimes: 1|2 {b['1|2']}, 2A|2B {b['2A|2B']}, 2|3 {b['2|3']}; recommended PLR "
          f"{summary['recommended_plr']} ({summary.get('recommendation_reason', 'no regimes')})")
    print(f"{'PLR':>9} {'regime':>6} {'PT train loss':>13} {'PT test':>8} {'SWA test':>8} {'best FT test':>12}  "
          f"top-2 features PT")
    for e in summary["per_plr"]:
        ft = max((s["test_acc"] for s in e["finetune"].values()), default=float("nan"))
        swa = e["swa"]["test_acc"] if e["swa"] else float("nan")
        fs = e["pretrain"]["features_sorted"]
        top = f"{fs[0]:.1%} {fs[1]:.1%}" if fs else "-"
        print(f"{e['plr']:9.3g} {e['regime'] or '-':>6} {e['pretrain']['train_loss']:13.3g} {e['pretrain']['test_acc']:8.1%} "
              f"{swa:8.1%} {ft:12.1%}  {top}")


if __name__ == "__main__":
    main_guard(main)
