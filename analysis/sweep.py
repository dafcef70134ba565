"""The sweep reader: a setup's run directories -> per-member records -> summary.json's content, with
the regimes, boundaries and recommendation (analysis/regimes.py). report.py writes what it returns;
bench/ reads sweeps with it too.

    records, notes = collect("runs/synthetic")          # one record per member of every complete run
    summary = summarize(records, "runs/synthetic")      # per-PLR means over seeds (docs/schema.md)
    add_regimes(summary, records, notes)                # regimes, boundaries, recommended PLR and range

Reads every complete run under ROOT/pretrain/*, ROOT/finetune/*, ROOT/swa/* (results.json,
members.jsonl, features.jsonl) and ROOT/geometry/*; incomplete runs and missing stages become notes.
"""
import glob
import json
import math
import os
from collections import defaultdict

import numpy as np

from analysis.regimes import PLRResult, label_regimes, standard_error
from core.errors import UserError
from core.io import read_jsonl
from engine.rundir import RunDir

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
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
        if key.startswith("val") and not all(r.get(key) is not None for r in recs):
            out[key] = out[f"{key}_std"] = None  # no validation set: the paper's protocol
            continue
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
    meta = first.get("meta", {})
    summary = {"setup": os.path.basename(os.path.normpath(root)), "dataset": meta.get("dataset"),
               "model": meta.get("model"), "model_args": meta.get("model_args"), "recipe": meta.get("recipe"),
               "plrs": plrs,
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


def selection(records):
    """The split choices are made on: "validation" where every fine-tuned and SWA member (or, for a
    scan, every pre-trained one) was evaluated on a validation set, else "test" (the paper's protocol
    for its image setups: the whole training set is trained on)."""
    stages = [r for r in records if r["stage"] in ("finetune", "swa")] or records
    return "validation" if stages and all(r.get("val_acc") is not None for r in stages) else "test"


def add_regimes(summary, records, notes):
    """Fill regime, boundaries, the recommended PLR and range, each PLR's score (analysis/regimes.py:
    the rule, printed in report.md), all chosen on `selection(records)`."""
    per = summary["per_plr"]
    meta = next(r["meta"] for r in records if r["stage"] == "pretrain")
    chance, split = meta.get("chance"), selection(records)
    summary["selection"] = split
    if chance is None:
        notes.append("the pre-training runs record no chance level (config.json meta); regimes not labelled")
        return
    sweep = []
    for e in per:  # the second half of pre-training: still falling (regime 1) or flat (regime 2)?
        c = mean_curve([r for r in records if r["stage"] == "pretrain" and r["plr"] == e["plr"]])
        score = seed_quality(records, e["plr"], split)
        e["score"] = None if score is None else {"split": split, "mean": score[0], "se": standard_error(score),
                                                 "n_seeds": score[2]}
        sweep.append(PLRResult(e["plr"], e["pretrain"]["train_loss"], e["pretrain"]["train_acc"],
                               pretrain_acc=e["pretrain"]["val_acc" if split == "validation" else "test_acc"],
                               score=score,
                               curve=[p for p in c if p[0] >= c[-1][0] / 2] if c else None))
    try:
        out = label_regimes(sweep, chance, practical=practical(meta.get("recipe")), split=split)
    except ValueError as err:
        notes.append(f"regimes not labelled: {err}")
        return
    for e, label in zip(per, out["labels"]):
        e["regime"] = label
    summary.update(boundaries=out["boundaries"], brackets=out["brackets"], recommended_plr=out["recommended_plr"],
                   recommendation_reason=out["reason"], two_a_test=out["two_a_test"], rule=out["rule"],
                   recommended_range=out["range"], recommended_range_plrs=out["range_plrs"],
                   recommended_range_reason=out["range_reason"], not_learned=out["not_learned"])


def practical(recipe):
    """Whether a sweep of this recipe labels by the practical rule (docs/protocol.md section 6), and its
    scan halves on held-out accuracy: off the sphere (`recipe`: a run's config.json meta["recipe"])."""
    return (recipe or {}).get("sphere") == "off"


def halving(scan):
    """Whether a scan.json is of a successive-halving scan (analysis/scan.Halving), not the curve tests."""
    return scan.get("reads") == "val acc"


def add_scan(summary, root):
    """A scan's directory (scan.py: ROOT/scan.json): its decisions replace the sweep rule's labels, and
    its pick (or "inconclusive") the recommendation. summary.json gets "scan": {"pick", "bracket",
    "cost_runs", "stopped_because", "per_plr": [{"plr", "regime", "steps", "decided_by"}], ...}."""
    path = os.path.join(root, "scan.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        scan = json.load(f)
    summary["scan"] = scan
    if not halving(scan):  # the curve tests read training curves alone (a halving scan keeps the runs' split)
        summary["selection"] = "training curves"
    summary["setup"] = f"{os.path.basename(os.path.dirname(os.path.normpath(root)))} (scan)"
    regime = {key(e["plr"]): e for e in scan["per_plr"]}
    for e in summary["per_plr"]:
        e["regime"] = (regime.get(key(e["plr"])) or {}).get("regime")
    lo, hi = scan["bracket"] or [None, None]
    summary["brackets"] = dict(summary.get("brackets") or {}, **{"1|2": [lo, hi] if lo and hi else None})
    summary["boundaries"] = dict(summary["boundaries"], **{"1|2": math.sqrt(lo * hi) if lo and hi else None})
    summary["recommended_plr"] = scan["pick"]
    cost = f"{scan['cost_runs']:.2f} of {scan['budget_runs']:g} runs"
    if scan["pick"] is not None and halving(scan):
        summary["recommendation_reason"] = (
            f"the adaptive scan's pick ({cost}): off the sphere, the PLR with the best pre-training "
            f"{summary['selection']} accuracy (the practical rule's 1|2 boundary), found by successive halving: "
            f"{regime[key(scan['pick'])]['decided_by']}")
    elif scan["pick"] is not None:
        summary["recommendation_reason"] = (
            f"the adaptive scan's pick ({cost}): the smallest regime-2 PLR, just above the 1|2 boundary it "
            f"bracketed between {lo:g} ({regime[key(lo)]['decided_by']}) and {hi:g} "
            f"({regime[key(hi)]['decided_by']}), where the paper finds the best PLRs")
    else:
        around = f"between {lo:g} and {hi:g}" if lo and hi else f"above {lo:g}" if lo else \
            f"below {hi:g}" if hi else "nowhere yet"
        more = f"; about {scan['runs_to_decide']:.2g} runs would decide it (--budget)" if scan.get("runs_to_decide") \
            else ""
        where = (f"the best {summary['selection']} accuracy is one of the PLRs {lo:g} .. {hi:g} still in the race"
                 if halving(scan) and lo and hi else f"the 1|2 boundary lies {around}")
        summary["recommendation_reason"] = f"inconclusive ({cost}): {scan['stopped_because']}; {where}{more}"


def per_seed_quality(records, plr, split="test"):
    """{(seed, data_seed): quality} of one PLR: each seed's mean accuracy on `split` ("validation" or
    "test") over its fine-tuned members (every FLR) and its SWA member: what PLRs are ranked by."""
    acc = "val_acc" if split == "validation" else "test_acc"
    per_seed = defaultdict(list)
    for r in records:
        if key(r["plr"]) == key(plr) and r["stage"] in ("finetune", "swa") and r.get(acc) is not None \
                and np.isfinite(r[acc]):
            per_seed[(r["seed"], r.get("data_seed"))].append(r[acc])
    return {u: float(np.mean(v)) for u, v in per_seed.items()}


def seed_quality(records, plr, split="test"):
    """(mean, std, seeds) over the PLR's seeds of `per_seed_quality`, or None."""
    q = list(per_seed_quality(records, plr, split).values())
    if not q:
        return None
    return float(np.mean(q)), float(np.std(q)), len(q)


# ---------------------------------------------------------------- what bench/ reads off a finished sweep

def key(lr):
    """LRs compare by their 3 significant digits (the run names and the grids use no more)."""
    return float(f"{float(lr):.3g}")


def read_sweep(root):
    """A finished sweep ROOT/SETUP: its summary.json, the per-member records, its seeds (`units_of`)
    and its pre-training run directories."""
    path = os.path.join(root, "summary.json")
    if not os.path.exists(path):
        raise UserError(f"{path} not found: run the sweep (run_all.sh) first")
    records, _ = collect(root)
    base = os.path.join(root, "pretrain")
    with open(path) as f:
        summary = json.load(f)
    return summary, records, units_of(records), [RunDir(os.path.join(base, d)) for d in sorted(os.listdir(base))]


def units_of(records):
    """The sweep's seeds: (seed, data_seed) pairs of its pre-training members, data seed major."""
    return sorted({(r["seed"], r.get("data_seed")) for r in records if r["stage"] == "pretrain"},
                  key=lambda u: (u[1] if u[1] is not None else -1, u[0]))


def results_index(records):
    """(stage, PLR, FLR, seed, data_seed) -> test accuracy."""
    return {(r["stage"], key(r["plr"]), None if r["flr"] is None else key(r["flr"]), r["seed"], r.get("data_seed")):
            r["test_acc"] for r in records}


def run_steps(root):
    """Training steps (one optimizer step of one model) of every complete run under root's stages."""
    total = 0
    for stage in STAGES:
        base = os.path.join(root, stage)
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            rd = RunDir(os.path.join(base, name))
            if not rd.is_complete():
                continue
            span = defaultdict(list)
            for r in rd.metrics():
                span[r["member"]].append(r["step"])
            total += sum(max(s) - min(s) for s in span.values())
    return total
