"""report.py's figures, drawn from summary.json's content alone (DESIGN.md): test accuracy, train
loss, pre-training curves, sorted single-feature accuracies, frequency bands, geometry and
sharpness against the PLR, each with the detected regimes shaded.

  drawn = draw_all(summary, "runs/synthetic/figures")   # names of the figures written (png + pdf)
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402



def _band(ax, x, mean, std, **kw):
    mean, std = np.asarray(mean), np.asarray(std)
    line, = ax.plot(x, mean, marker="o", ms=3, **kw)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)


def _legend(axes):
    """A legend on the first panel that has labelled lines (panels without data have none)."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
            return


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
    shade_regimes(ax, summary)
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
    _legend(axes[0])
    fig.suptitle(f"{summary['setup']}: sorted single-feature accuracies (mean over seeds)")
    return _save(fig, figdir, "features") if drawn else plt.close(fig)

REGIME_COLORS = {"1": "tab:green", "2A": "tab:blue", "2B": "tab:purple", "2": "tab:blue", "3": "tab:red"}


def shade_regimes(ax, summary):
    """Background bands per regime: each PLR's label spans to the log-midpoints with its neighbours."""
    per = summary["per_plr"]
    x = np.log10([e["plr"] for e in per])
    edges = np.concatenate([[x[0] - 0.25], (x[1:] + x[:-1]) / 2, [x[-1] + 0.25]]) if len(x) > 1 else \
        np.array([x[0] - 0.25, x[0] + 0.25])
    seen = set()
    for e, lo, hi in zip(per, edges[:-1], edges[1:]):
        r = e.get("regime")
        if r in REGIME_COLORS:
            ax.axvspan(10 ** lo, 10 ** hi, color=REGIME_COLORS[r], alpha=0.08, lw=0,
                       label=None if r in seen else f"regime {r}")
            seen.add(r)


def plot_pretrain(summary, figdir):
    """Pre-training train loss and test accuracy vs PLR with the detected regimes (paper Fig. 1)."""
    per = summary["per_plr"]
    x = [e["plr"] for e in per]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    a1.errorbar(x, [e["pretrain"]["train_loss"] for e in per], [e["pretrain"]["train_loss_std"] for e in per],
                marker="o", ms=3, color="k", capsize=2)
    a1.set(yscale="log", ylabel="train loss, end of pre-training")
    _band(a2, x, [100 * e["pretrain"]["test_acc"] for e in per], [100 * e["pretrain"]["test_acc_std"] for e in per],
          color="k", label="test")
    _band(a2, x, [100 * e["pretrain"]["train_acc"] for e in per], [100 * e["pretrain"]["train_acc_std"] for e in per],
          color="tab:gray", ls="--", label="train")
    a2.set(ylabel="accuracy, %")
    for ax in (a1, a2):
        shade_regimes(ax, summary)
        ax.set(xscale="log", xlabel="pre-training LR (ELR)")
        ax.grid(alpha=0.3)
    a2.legend(fontsize=7)
    fig.suptitle(f"{summary['setup']}: pre-training, regimes detected by report.py")
    return _save(fig, figdir, "pretrain")


def plot_geometry(summary, figdir):
    """Angles and train/test error barriers between FT-low, FT-high and SWA vs PLR (paper Fig. 3, 9)."""
    per = [e for e in summary["per_plr"] if e.get("geometry")]
    if not per:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (q, label) in zip(axes, (("angle", "angle, rad"), ("train_barrier", "train error barrier, %"),
                                     ("test_barrier", "test error barrier, %"))):
        for kind, color in (("low_high", "tab:blue"), ("swa_high", "tab:orange"), ("swa_low", "tab:green")):
            pts = [(e["plr"], e["geometry"][f"{q}_{kind}"]) for e in per if e["geometry"][f"{q}_{kind}"] is not None]
            if pts:
                scale = 1 if q == "angle" else 100
                ax.plot([p for p, _ in pts], [scale * v for _, v in pts], marker="o", ms=3, color=color,
                        label=kind.replace("_", " / ").replace("low", "FT-low").replace("high", "FT-high")
                        .replace("swa", "SWA"))
        shade_regimes(ax, summary)
        ax.set(xscale="log", xlabel="pre-training LR (ELR)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{summary['setup']}: geometry of the solutions (mean over seeds)")
    return _save(fig, figdir, "geometry")


def plot_bands(summary, figdir):
    """Accuracy on frequency-band test sets vs PLR after PT, SWA, FT-low, FT-high (paper Fig. 5, 11, 13)."""
    per = summary["per_plr"]
    keys = flr_keys(summary)
    panels = [("pre-training", lambda e: e["pretrain"]), ("SWA", lambda e: e["swa"])]
    if keys:
        panels += [(f"fine-tuning, low FLR {keys[0]}", lambda e, k=keys[0]: e["finetune"].get(k)),
                   (f"fine-tuning, high FLR {keys[-1]}", lambda e, k=keys[-1]: e["finetune"].get(k))]
    if not any(get(e) and get(e).get("bands") for _, get in panels for e in per):
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), sharey=True, squeeze=False)
    cmap = plt.get_cmap("coolwarm")
    for ax, (title, get) in zip(axes[0], panels):
        pts = [(e["plr"], get(e)["bands"]) for e in per if get(e) and get(e).get("bands")]
        if not pts:
            ax.set_title(f"{title}\n(no data)")
            continue
        groups = list(pts[0][1])
        for i, g in enumerate(groups):
            ax.plot([p for p, _ in pts], [100 * b.get(g, np.nan) for _, b in pts], marker="o", ms=3,
                    color=cmap(i / max(1, len(groups) - 1)), label=f"band {g}")
        shade_regimes(ax, summary)
        ax.set(xscale="log", title=title, xlabel="pre-training LR (ELR)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("band test accuracy, %")
    _legend(axes[0])
    fig.suptitle(f"{summary['setup']}: accuracy on frequency-band test sets (mean over seeds)")
    return _save(fig, figdir, "bands")


def plot_sharpness(summary, figdir):
    """Test error vs sharpness of fine-tuned solutions at a fixed training loss (paper Fig. 17)."""
    rows = [r for r in summary.get("at_loss", []) if r["sharpness"] is not None and r["test_err"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sc = ax.scatter([r["sharpness"] for r in rows], [100 * r["test_err"] for r in rows],
                    c=np.log10([r["plr"] for r in rows]), cmap="viridis", s=18)
    fig.colorbar(sc, ax=ax, label="log10 PLR")
    ax.set(xlabel="sharpness (mean mini-batch gradient norm)", ylabel="test error, %",
           title=f"{summary['setup']}: fine-tuned solutions at train loss {summary.get('at_loss_target')}")
    ax.grid(alpha=0.3)
    return _save(fig, figdir, "sharpness")


def draw_all(summary, figdir):
    """Every figure whose data the summary holds; returns their names."""
    plots = (plot_pretrain, plot_accuracy, plot_train_loss, plot_features, plot_bands, plot_geometry,
             plot_sharpness)
    return [name for name in (plot(summary, figdir) for plot in plots) if name]
