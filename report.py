"""Read the run directories of one setup and write summary.json and the figures.

  python report.py --root runs/synthetic
  # -> runs/synthetic/summary.json (DESIGN.md schema: per-PLR means over seeds of pre-training,
  #    fine-tuning (per FLR) and SWA results, sorted single-feature accuracies)
  #    runs/synthetic/figures/{accuracy,train_loss,features}.{png,pdf}

Reads every complete run under ROOT/pretrain/*, ROOT/finetune/*, ROOT/swa/* (results.json,
members.jsonl, features.jsonl); incomplete runs and missing stages are reported and skipped.
Evaluation computes, plotting reads: the figures are drawn from summary.json alone.
"""
import glob
import json
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.args import Parser, UserError, main_guard  # noqa: E402
from utils.rundir import RunDir, read_jsonl, write_json_atomic  # noqa: E402

STAGES = ("pretrain", "finetune", "swa")
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
            if not feats:
                notes.append(f"{d} has no features.jsonl (run eval_fourier.py --run {d})")
            for m, res in zip(members, results["members"]):
                records.append(dict(m, **res, stage=stage, run=d, setup=config.get("settings", {}),
                                    features=feats.get(m["member"], {}).get("features")))
    return records, notes


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


def stage_summary(recs):
    out = {}
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        out[key], out[f"{key}_std"] = mean_std([r[key] for r in recs])
    out["n_seeds"] = len(recs)
    out["features_sorted"], out["features_sorted_std"] = sorted_features(recs)
    return out


def summarize(records, root):
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
        entry["geometry"] = None
        per_plr.append(entry)
    setup = first.get("setup", {})
    return {"setup": os.path.basename(os.path.normpath(root)), "dataset": setup.get("dataset"),
            "model": setup.get("model"), "plrs": plrs,
            "boundaries": {"1|2": None, "2A|2B": None, "2|3": None}, "recommended_plr": None,
            "per_plr": per_plr}


# ---------------------------------------------------------------- figures (read summary only)

def _band(ax, x, mean, std, **kw):
    mean, std = np.asarray(mean), np.asarray(std)
    line, = ax.plot(x, mean, marker="o", ms=3, **kw)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)


def _save(fig, figdir, name):
    for ext in ("png", "pdf"):
        fig.savefig(os.path.join(figdir, f"{name}.{ext}"), dpi=130, bbox_inches="tight")
    plt.close(fig)
    return name


def flr_keys(summary):
    keys = {k for e in summary["per_plr"] for k in e["finetune"]}
    return sorted(keys, key=float)


def plot_accuracy(summary, figdir):
    """Test accuracy vs PLR after pre-training, fine-tuning (each FLR) and SWA (paper Fig. 2/8)."""
    per = summary["per_plr"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = [e["plr"] for e in per]
    _band(ax, x, [100 * e["pretrain"]["test_acc"] for e in per],
          [100 * e["pretrain"]["test_acc_std"] for e in per], color="k", label="pre-train")
    keys = flr_keys(summary)
    cmap = plt.get_cmap("viridis")
    for i, k in enumerate(keys):
        pts = [(e["plr"], e["finetune"][k]) for e in per if k in e["finetune"]]
        _band(ax, [p for p, _ in pts], [100 * s["test_acc"] for _, s in pts],
              [100 * s["test_acc_std"] for _, s in pts], color=cmap(i / max(1, len(keys) - 1)),
              lw=1, label=f"fine-tune FLR {k}")
    swa = [(e["plr"], e["swa"]) for e in per if e["swa"]]
    if swa:
        _band(ax, [p for p, _ in swa], [100 * s["test_acc"] for _, s in swa],
              [100 * s["test_acc_std"] for _, s in swa], color="tab:red", lw=2, label="SWA")
    ax.set(xscale="log", xlabel="pre-training LR (ELR)", ylabel="test accuracy, %",
           title=f"{summary['setup']}: test accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, figdir, "accuracy")


def plot_train_loss(summary, figdir):
    per = summary["per_plr"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = [e["plr"] for e in per]
    ax.errorbar(x, [e["pretrain"]["train_loss"] for e in per], [e["pretrain"]["train_loss_std"] for e in per],
                marker="o", ms=3, color="k", capsize=2)
    ax.set(xscale="log", yscale="log", xlabel="pre-training LR (ELR)", ylabel="train loss at end of pre-training",
           title=f"{summary['setup']}: pre-training loss")
    ax.grid(alpha=0.3)
    return _save(fig, figdir, "train_loss")


def plot_features(summary, figdir):
    """Sorted single-feature accuracy vs PLR per stage (paper Fig. 3 and 10 of the synthetic example)."""
    per = summary["per_plr"]
    keys = flr_keys(summary)
    panels = [("pre-training", lambda e: e["pretrain"])]
    if keys:
        panels.append((f"fine-tuning, low FLR {keys[0]}", lambda e, k=keys[0]: e["finetune"].get(k)))
        panels.append((f"fine-tuning, high FLR {keys[-1]}", lambda e, k=keys[-1]: e["finetune"].get(k)))
    panels.append(("SWA", lambda e: e["swa"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), sharey=True, squeeze=False)
    cmap = plt.get_cmap("plasma")
    drawn = False
    for ax, (title, get) in zip(axes[0], panels):
        pts = [(e["plr"], get(e)["features_sorted"]) for e in per if get(e) and get(e)["features_sorted"]]
        if not pts:
            ax.set_title(f"{title}\n(no data)")
            continue
        drawn = True
        x, f = [p for p, _ in pts], np.asarray([v for _, v in pts]) * 100  # (plrs, 16)
        for rank in range(f.shape[1]):
            ax.plot(x, f[:, rank], color=cmap(rank / f.shape[1]), lw=1.5 if rank == 0 else 0.8,
                    label=f"rank {rank + 1}" if rank in (0, 1, f.shape[1] - 1) else None)
        ax.set(xscale="log", title=title, xlabel="pre-training LR (ELR)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("single-feature test accuracy, %")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{summary['setup']}: sorted single-feature accuracies (mean over seeds)")
    return _save(fig, figdir, "features") if drawn else plt.close(fig)


def main():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="setup directory holding pretrain/, finetune/, swa/")
    args = p.parse_args()
    if not os.path.isdir(args.root):
        raise UserError(f"--root {args.root} is not a directory")
    records, notes = collect(args.root)
    for n in notes:
        print(f"note: {n}")
    if not any(r["stage"] == "pretrain" for r in records):
        raise UserError(f"--root {args.root} holds no complete pre-training run; nothing to report")
    summary = summarize(records, args.root)
    summary["missing"] = notes
    try:
        figdir = os.path.join(args.root, "figures")
        os.makedirs(figdir, exist_ok=True)
        write_json_atomic(os.path.join(args.root, "summary.json"), summary)
    except OSError as e:
        raise UserError(f"cannot write to {args.root}: {e.strerror}")
    drawn = [f for f in (plot_accuracy(summary, figdir), plot_train_loss(summary, figdir),
                         plot_features(summary, figdir)) if f]
    print(f"summary: {os.path.join(args.root, 'summary.json')}")
    print(f"figures: {figdir}/ ({', '.join(drawn)})")
    print(f"{'PLR':>9} {'PT train loss':>13} {'PT test':>8} {'SWA test':>8} {'best FT test':>12}  top-2 features PT")
    for e in summary["per_plr"]:
        ft = max((s["test_acc"] for s in e["finetune"].values()), default=float("nan"))
        swa = e["swa"]["test_acc"] if e["swa"] else float("nan")
        fs = e["pretrain"]["features_sorted"]
        top = f"{fs[0]:.1%} {fs[1]:.1%}" if fs else "-"
        print(f"{e['plr']:9.3g} {e['pretrain']['train_loss']:13.3g} {e['pretrain']['test_acc']:8.1%} "
              f"{swa:8.1%} {ft:12.1%}  {top}")


if __name__ == "__main__":
    main_guard(main)
