"""report.py's figures, drawn from summary.json's content alone: test accuracy, train
loss, pre-training curves, sorted single-feature accuracies, frequency bands, the band-split
study, geometry and sharpness against the PLR, each with the detected regimes shaded.

  drawn = draw_all(summary, "runs/synthetic/figures")   # names of the figures written (png + pdf)

And eval_fourier.py --band_images's figure of test images with their band images (paper Fig. 7):

  band_images_figure(x_test[:4], parse_bands("0,1-8,9-24,25-32"), "fig7.png")
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from core.errors import UserError  # noqa: E402


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
    """Test accuracy vs PLR after pre-training, fine-tuning (each FLR) and SWA (paper Figs. 1, 8, 12, 14)."""
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
    """Sorted single-feature accuracy vs PLR per stage (paper Figs. 3 and 10, the synthetic example)."""
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
    """Angles and train/test error barriers between FT-low, FT-high and SWA vs PLR (paper Fig. 9)."""
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
    """Accuracy on frequency-band test sets vs PLR after PT, SWA, FT-low, FT-high (paper Figs. 5, 6, 11, 13, 15)."""
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
        if any(get(e) and get(e).get("band_splits") for e in per):
            groups = _first_partition(groups)  # the split study's groups are in band_splits.png
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


def _group_range(key):
    lo, _, hi = key.partition("-")
    return int(lo), int(hi or lo)


def _first_partition(groups):
    """The band groups that overlap no group listed before them: with the band-split study's groups
    (1-4, 5-24, 1-6, ...) added after the default ones, the default 0, 1-8, 9-24, 25-32."""
    kept = []
    for g in groups:
        lo, hi = _group_range(g)
        if all(hi < a or lo > b for a, b in map(_group_range, kept)):
            kept.append(g)
    return kept


def plot_band_splits(summary, figdir):
    """The band-split study (paper Fig. 16): accuracy on the low group 1..s and on the mid group
    s+1..M (M = 24 for 32x32) against the low/mid split s, one colour per PLR, one panel per stage
    (fine-tuning at the lowest FLR, pre-training, SWA) that has the study (eval_fourier.py --band_splits)."""
    per = summary["per_plr"]
    keys = flr_keys(summary)
    panels = [(f"fine-tuning, low FLR {keys[0]}", lambda e, k=keys[0]: e["finetune"].get(k))] if keys else []
    panels += [("pre-training", lambda e: e["pretrain"]), ("SWA", lambda e: e["swa"])]
    panels = [(t, get) for t, get in panels if any(get(e) and get(e).get("band_splits") for e in per)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), sharey=True, squeeze=False,
                             layout="constrained")
    cmap, logs = plt.get_cmap("viridis"), np.log10([e["plr"] for e in per])
    color = lambda p: cmap(0.5 if np.ptp(logs) == 0 else (np.log10(p) - logs.min()) / np.ptp(logs))  # noqa: E731
    handles = {}
    for ax, (title, get) in zip(axes[0], panels):
        xs = set()
        for e in per:
            st = get(e)
            if not st or not st.get("band_splits"):
                continue
            pts = sorted((int(s), v) for s, v in st["band_splits"].items())
            x = [s for s, _ in pts]
            xs.update(x)
            line, = ax.plot(x, [100 * v["low"] for _, v in pts], marker="o", ms=3, color=color(e["plr"]))
            ax.plot(x, [100 * v["mid"] for _, v in pts], marker="s", ms=3, ls="--", color=color(e["plr"]))
            handles.setdefault(e["plr"], Line2D([], [], color=line.get_color(), marker="o", ms=3,
                                                label=f"PLR {e['plr']:.3g}" + (f" ({e['regime']})" if e.get("regime")
                                                                               else "")))
        ax.set_xticks(sorted(xs))
        ax.set(title=title, xlabel="low/mid split s")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("band test accuracy, %")
    styles = [Line2D([], [], color="k", label="low group 1..s"),
              Line2D([], [], color="k", ls="--", label="mid group s+1..M")]
    axes[0][-1].legend(handles=styles + [handles[p] for p in sorted(handles)], fontsize=7, loc="upper left",
                       bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"{summary['setup']}: low/mid band split (M = 24 for 32x32 images; mean over seeds)")
    return _save(fig, figdir, "band_splits")


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


def lr_pick_figure(summary, lr_pick, figdir):
    """bench/lr_pick.py's figure (lr_free.png): the sweep's score (mean fine-tuned/SWA accuracy on the
    selection split, +- its standard error) against the PLR with the regimes shaded, and where each
    method's LR lands: the picks (per eval seed) and the learning-rate-free optimizers' effective LRs
    (the geometric mean over a run, per eval seed; off the sphere the step size over the weights'
    squared norm), each a row of markers below the curve."""
    per = [e for e in summary["per_plr"] if e.get("score")]
    fig, ax = plt.subplots(figsize=(8, 5))
    shade_regimes(ax, summary)
    if per:
        ax.errorbar([e["plr"] for e in per], [100 * e["score"]["mean"] for e in per],
                    yerr=[100 * (e["score"]["se"] or 0) for e in per], color="k", marker="o", ms=3,
                    label=f"sweep: mean fine-tuned/SWA {summary.get('selection', 'test')} accuracy")
    lo = min([100 * e["score"]["mean"] for e in per] or [0]) - 5
    methods = [(m, e) for m, e in lr_pick["methods"].items() if (e["lrs"] or e["effective_lrs"])]
    cmap = plt.get_cmap("tab10")
    for k, (m, e) in enumerate(methods):
        xs = [v for v in (e["lrs"] or e["effective_lrs"]) if v]
        ax.scatter(xs, [lo - 1.5 * k] * len(xs), color=cmap(k % 10), marker="|" if e["lrs"] else "x", s=80,
                   label=f"{m} ({e['kind']})")
    ax.set(xscale="log", xlabel="PLR / effective LR (ELR)", ylabel="accuracy %",
           title=f"{summary['setup']}: where each method's LR lands (picks |, learning-rate-free x)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return _save(fig, figdir, "lr_free")


def draw_all(summary, figdir):
    """Every figure whose data the summary holds; returns their names."""
    plots = (plot_pretrain, plot_accuracy, plot_train_loss, plot_features, plot_bands, plot_band_splits,
             plot_geometry, plot_sharpness)
    return [name for name in (plot(summary, figdir) for plot in plots) if name]


# ---------------------------------------------------------------- band images (paper Fig. 7)

def check_figure_path(path):
    """A figure file matplotlib can write (its extension names a format) in an existing folder."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise UserError(f"--out {path}: give a figure file ending in one of .{', .'.join(sorted(formats))}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"--out {path}: folder {folder} does not exist")


def _show(ax, img):
    """An image (C, H, W) in [0, 1]: grey for one channel, RGB for three, the channel mean otherwise."""
    img = img.float().cpu()
    if img.shape[0] == 3:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    else:
        ax.imshow(img.mean(0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def band_images_figure(images, bands, path):
    """Paper Fig. 7: for each image of images (n, C, H, W) uint8, two rows. Top: the image and its band
    image for each (key, lo, hi) of `bands`, each channel scaled to [0, 1] per image (display_scale).
    Bottom: log(1 + |F|) of its centred spectrum summed over channels, and that spectrum masked to
    each group's bands (one colour scale per image). Greyscale images are drawn in grey. Written to
    `path` (format from its extension) through a temporary file, so a failure leaves no partial file."""
    from analysis.fourier import band_images, display_scale, log_spectrum, masked_log_spectrum
    n, cols = images.shape[0], 1 + len(bands)
    parts = [(key, display_scale(b)) for key, b in band_images(images, bands)]   # (n, C, H, W) each
    full = log_spectrum(images)                                                    # (n, H, W)
    masked = [masked_log_spectrum(images, lo, hi) for _, lo, hi in bands]
    fig, axes = plt.subplots(2 * n, cols, figsize=(1.6 * cols, 3.3 * n), squeeze=False, layout="constrained")
    for i in range(n):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        _show(top[0], images[i].float() / 255)
        top[0].set_title("image" if i == 0 else "", fontsize=8)
        vmax = float(full[i].max())
        bottom[0].imshow(full[i].numpy(), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        bottom[0].set_title("log(1+|F|)" if i == 0 else "", fontsize=8)
        for j, ((key, b), m) in enumerate(zip(parts, masked), start=1):
            _show(top[j], b[i])
            bottom[j].imshow(m[i].numpy(), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            if i == 0:
                top[j].set_title(f"band{'s' if '-' in key else ''} {key}", fontsize=8)
                bottom[j].set_title(f"spectrum, {key}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("test images, their band images (each channel scaled to [0, 1]) and masked log-amplitude spectra",
                 fontsize=9)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    tmp = f"{path}.tmp"
    try:
        fig.savefig(tmp, format=ext, dpi=130, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
