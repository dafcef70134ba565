"""Regime labels, boundaries and a recommended PLR from a PLR sweep (docs/protocol.md sections 1, 4, 6).

Pure functions on already-aggregated numbers (means over seeds, one value per PLR); numpy only.

    out = label_regimes(plrs, train_loss, train_acc, chance=0.5,
                        ft_acc=[{3.16e-05: 0.91, 7.5e-03: 0.90}, ...], swa_acc=[0.92, ...])
    out["labels"]           # ["1", ..., "2A", ..., "2B", ..., "3"], one per PLR
    out["boundaries"]       # {"1|2": 0.0087, "2A|2B": 0.0205, "2|3": 0.049}  (None when absent)
    out["brackets"]         # {"1|2": [0.0075, 0.01], ...}: the two PLRs each boundary lies between
    out["recommended_plr"]  # 0.01, with out["reason"] saying why
    print(out["rule"])      # the rule below in words, with the thresholds used

The rule (thresholds are keyword arguments of `label_regimes`; defaults are module constants):

1. Regime 3, divergence: final train accuracy <= chance + DIV_TOL * (1 - chance), i.e. no more
   than 10 % of the way from a constant prediction to perfect (0.55 for balanced binary data,
   0.19 for CIFAR-10, 0.109 for CIFAR-100). A non-finite loss or accuracy also counts. `chance`
   is the accuracy of a constant prediction: 1 / classes for balanced classes, 0.5 for the
   synthetic task.
2. Otherwise regime 1, convergence, if the final train loss < LOSS_TOL (1e-2: regime 1 ends near
   1e-5..1e-3 in the synthetic task and near 1e-3 on CIFAR, regime 2 sits at 0.05..1), or if the
   loss is still clearly falling: given a training-loss curve (e.g. the last half of
   pre-training), the mean of its last CURVE_WINDOW fraction of points is below DECAY_RATIO
   times the mean of its first CURVE_WINDOW fraction. This catches small PLRs that converge too
   slowly to reach LOSS_TOL in the budget. Everything else is regime 2, chaotic equilibrium.
3. Cleanup: labels must run 1, 2, 3 as the PLR grows. The two split points (each regime may be
   empty) are those whose ordered labelling disagrees with the fewest per-PLR verdicts; ties go
   to the lower split point. Clean inputs come through unchanged; an isolated noisy PLR is
   relabelled (listed in `relabelled`).
4. 2A vs 2B: quality of a PLR = its fine-tuned test accuracies (every FLR) and SWA test
   accuracy, where available; best = the highest mean quality over all regime-1 and regime-2
   PLRs. With at least STAT_MIN_SEEDS seeds per PLR (`quality_stats`: each seed's mean quality,
   its mean, std and count) the test is statistical, the notion of `recommended_range`: a regime-2
   PLR votes 2A when its mean quality is within RANGE_Z standard errors (over seeds) of the best's.
   With fewer seeds the spread is unknown and a fixed tolerance stands in: a regime-2 PLR votes 2A
   when all of its results are >= best - QUALITY_TOL (0.02 = two percentage points, about the
   spread of one PLR's results across FLRs in the synthetic paper sweep: every FLR and SWA reach
   the same, best quality). Otherwise it votes 2B. 2A is the lower part of regime 2: one split
   point, chosen like the cleanup (fewest disagreements, ties: the smaller 2A) but never below the
   best regime-2 PLR when that one votes 2A; PLRs without results do not vote. With no results in
   regime 2 the label stays "2" and 2A|2B is None.
5. Boundaries: the geometric mean of the last PLR below and the first PLR above (log-midpoint);
   `brackets` gives the pair. "1|2" and "2|3" are None when the sweep has no PLR on one side
   (no regime 1; no regime 3); "2A|2B" is None unless both 2A and 2B contain PLRs.
6. Recommended PLR: the regime-1/2 PLR with the best mean quality (ties: the lower PLR); `reason`
   names its regime (normally 2A, as the paper finds; with few seeds the best can be the last
   regime-1 PLR, next to the boundary). Without fine-tuning/SWA results in regime 2 (a scan): the
   smallest regime-2 PLR, just above 1|2, where 2A starts; no regime 2 -> the largest regime-1 PLR (extend
   the sweep upwards); everything diverges -> None. A sweep without a
   regime-1 PLR says so: its 1|2 boundary may lie below the grid, or pre-training was too short
   for any loss to converge (a scan cut too short).

Practical setting (docs/protocol.md section 6, `practical=True`): with weight decay and momentum the
training loss does not converge, so step 2 is replaced: the 1|2 boundary is taken at the PLR p
with the best pre-training test accuracy among the non-divergent PLRs (ties: the lower PLR).
PLRs below p are regime 1, p and above are regime 2 (the optimal range starts at the threshold);
the boundary is p itself and its bracket [p, p]. Steps 1 and 3-6 are unchanged.
"""
import itertools
import math

import numpy as np

DIV_TOL = 0.1        # regime 3: train acc within this fraction of (1 - chance) above chance
LOSS_TOL = 1e-2      # regime 1: final train loss below this
DECAY_RATIO = 0.5    # regime 1: curve's late-window mean / early-window mean below this
CURVE_WINDOW = 0.25  # fraction of a curve's points (at least one) averaged at each end
QUALITY_TOL = 0.02   # 2A with too few seeds: every FT/SWA accuracy within this (absolute) of the best
RANGE_Z = 2.0        # "statistically indistinguishable": within 2 standard errors of the difference
STAT_MIN_SEEDS = 3   # seeds per PLR from which the spread over seeds is trusted (range, 2A test)

BOUNDARY_KEYS = ("1|2", "2A|2B", "2|3")


def rule_text(div_tol=DIV_TOL, loss_tol=LOSS_TOL, decay_ratio=DECAY_RATIO, curve_window=CURVE_WINDOW,
              quality_tol=QUALITY_TOL, practical=False, z=RANGE_Z, min_seeds=STAT_MIN_SEEDS):
    """The labelling rule in a few sentences, with the given thresholds (for README / report.md)."""
    if practical:
        step2 = ("Practical setting (training loss does not converge): the 1|2 boundary is the PLR "
                 "with the best pre-training test accuracy among the non-divergent PLRs; smaller PLRs "
                 "are regime 1, it and larger ones regime 2.")
    else:
        step2 = (f"Otherwise a PLR is regime 1 (convergence) if its final train loss is below {loss_tol:g}, "
                 f"or if its loss is still falling (over the given loss curve, the mean of the last "
                 f"{curve_window:.0%} of points is below {decay_ratio:g} x the mean of the first "
                 f"{curve_window:.0%}); else regime 2 (chaotic equilibrium).")
    return "\n".join([
        f"A PLR is regime 3 (divergence) if its final train accuracy is at most chance + {div_tol:g} x "
        f"(1 - chance), or its loss is not finite.",
        step2,
        "Labels must run 1, 2, 3 with growing PLR: the split points are the ones that disagree with "
        "the fewest per-PLR verdicts (ties: the lower split).",
        f"Regime 2 splits into 2A (lower part) and 2B. With at least {min_seeds} seeds per PLR a regime-2 "
        f"PLR votes 2A if its mean fine-tuned/SWA test accuracy (all FLRs and SWA, averaged per seed) is "
        f"within {z:g} standard errors over seeds of the best PLR's; with fewer seeds, if every fine-tuned "
        f"(all FLRs) and SWA test accuracy is within {quality_tol:g} of the best mean fine-tuned/SWA "
        f"accuracy of the sweep. The 2A|2B split is chosen the same way (ties: the smaller 2A), keeping the best "
        f"regime-2 PLR in 2A when it votes 2A. Without "
        f"fine-tuning/SWA results regime 2 is not split.",
        f"Each boundary{' other than 1|2' if practical else ''} is the geometric mean of the two "
        f"neighbouring PLRs it lies between (none if the sweep has no PLR on one side).",
        "The recommended PLR is the regime-1/2 PLR with the best mean fine-tuned/SWA accuracy (ties: the "
        "lower PLR), normally in 2A; without fine-tuning/SWA results (a scan) it is the smallest regime-2 PLR.",
    ])


RULE = rule_text()


def segment(votes, n_segments):
    """Non-decreasing labelling 0..n_segments-1 closest to per-item votes.

    votes: list of ints in [0, n_segments) or None (no vote). Returns the n_segments - 1 split
    indices s_1 <= s_2 <= ... (item i gets label #{k: s_k <= i}) that minimise the number of
    disagreeing votes; ties go to the lexicographically smallest splits (the lower split points).
    Exhaustive search: fine for sweeps of tens of PLRs.
    """
    n = len(votes)
    best, best_cost = None, None
    # combinations_with_replacement yields split tuples in lexicographic order: the first
    # minimum found is the tie-break winner.
    for splits in itertools.combinations_with_replacement(range(n + 1), n_segments - 1):
        cost = sum(1 for i, v in enumerate(votes)
                   if v is not None and v != sum(1 for s in splits if s <= i))
        if best_cost is None or cost < best_cost:
            best, best_cost = splits, cost
    return list(best)


def still_decreasing(curve, decay_ratio=DECAY_RATIO, curve_window=CURVE_WINDOW):
    """True if a loss curve [(step, loss), ...] clearly falls: late-window mean < decay_ratio x early.

    Missing (None) and non-finite points are dropped; fewer than two points (or a non-positive
    early mean) -> False.
    """
    if not curve:
        return False
    pts = sorted((float(s), float(l)) for s, l in curve if l is not None and math.isfinite(float(l)))
    if len(pts) < 2:
        return False
    loss = np.array([l for _, l in pts])
    k = max(1, int(round(curve_window * len(loss))))
    k = min(k, len(loss) // 2) or 1
    early, late = loss[:k].mean(), loss[-k:].mean()
    return bool(early > 0 and late < decay_ratio * early)


def _quality(ft, swa):
    """All available fine-tuned (every FLR) and SWA accuracies of one PLR, as a list of floats."""
    vals = []
    if ft:
        vals += [float(a) for a in ft.values() if a is not None]
    if swa is not None:
        vals.append(float(swa))
    return [v for v in vals if math.isfinite(v)]


def _geo(lo, hi):
    return float(math.sqrt(lo * hi))


def _per_plr(name, values, n, allow_none=False):
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but there are {n} PLRs")
    if not allow_none and any(v is None for v in values):
        raise ValueError(f"{name} is missing for some PLRs: every PLR needs a pre-training {name}")
    return values


def label_regimes(plrs, train_loss, train_acc, chance, ft_acc=None, swa_acc=None, loss_curves=None,
                  pt_test_acc=None, practical=False, quality_stats=None, div_tol=DIV_TOL, loss_tol=LOSS_TOL,
                  decay_ratio=DECAY_RATIO, curve_window=CURVE_WINDOW, quality_tol=QUALITY_TOL, z=RANGE_Z,
                  min_seeds=STAT_MIN_SEEDS):
    """Regime labels, boundaries and a recommended PLR for one sweep (rule: module docstring).

    plrs: strictly increasing PLRs. train_loss, train_acc: final pre-training train loss and
    accuracy per PLR (fractions). chance: accuracy of a constant prediction (1 / classes).
    ft_acc: per PLR a dict FLR (number or key string) -> fine-tuned test accuracy, or None.
    swa_acc: per PLR the SWA test accuracy, or None. loss_curves: per PLR a list of
    (step, train loss), e.g. the last half of pre-training, or None.
    pt_test_acc: per PLR pre-training test accuracy (required with practical=True).
    quality_stats: per PLR None or (mean, std, n) over its n seeds of each seed's mean FT/SWA test
    accuracy (`recommended_range`'s input): with n >= min_seeds everywhere, the 2A test is statistical.

    Returns a dict: labels (per PLR: "1", "2A", "2B", "2" (2A/2B unknown) or "3"), raw_labels (per
    PLR verdicts "1"/"2"/"3" before the cleanup), relabelled (PLRs whose 1/2/3 verdict the cleanup
    changed), quality (per PLR mean FT/SWA accuracy or None), best_quality, boundaries
    {"1|2", "2A|2B", "2|3"} (float or None), brackets (same keys, [lo, hi] or None),
    recommended_plr (float or None), reason (str), two_a_test (how 2A was told from 2B), rule (str).
    """
    plrs = [float(p) for p in plrs]
    n = len(plrs)
    if n == 0:
        raise ValueError("no PLRs: the sweep is empty")
    if any(p <= 0 for p in plrs) or any(b <= a for a, b in zip(plrs, plrs[1:])):
        raise ValueError(f"plrs must be positive and strictly increasing, got {plrs}")
    if not 0 <= chance < 1:
        raise ValueError(f"chance must be the constant-prediction accuracy in [0, 1), got {chance}")
    train_loss = _per_plr("train_loss", train_loss, n)
    train_acc = _per_plr("train_acc", train_acc, n)
    ft_acc = _per_plr("ft_acc", ft_acc, n, allow_none=True)
    swa_acc = _per_plr("swa_acc", swa_acc, n, allow_none=True)
    loss_curves = _per_plr("loss_curves", loss_curves, n, allow_none=True)
    if practical and pt_test_acc is None:
        raise ValueError("practical=True needs pt_test_acc (pre-training test accuracy per PLR)")
    pt_test_acc = _per_plr("pt_test_acc", pt_test_acc, n, allow_none=True)

    # ---- per-PLR verdicts: 0 = regime 1, 1 = regime 2, 2 = regime 3
    div_at = chance + div_tol * (1 - chance)
    diverged = [not (math.isfinite(float(l)) and math.isfinite(float(a))) or float(a) <= div_at
                for l, a in zip(train_loss, train_acc)]
    practical_p = None
    if practical:
        cand = [i for i in range(n) if not diverged[i] and pt_test_acc[i] is not None
                and math.isfinite(float(pt_test_acc[i]))]
        if cand:
            practical_p = max(cand, key=lambda i: (float(pt_test_acc[i]), -i))  # ties: lower PLR
        elif not all(diverged):
            raise ValueError("practical=True: no non-divergent PLR has a pre-training test accuracy")
        votes = [2 if diverged[i] else (0 if i < practical_p else 1) for i in range(n)]
    else:
        votes = [2 if diverged[i] else
                 0 if (float(train_loss[i]) < loss_tol
                       or still_decreasing(loss_curves[i], decay_ratio, curve_window)) else 1
                 for i in range(n)]
    a, b = segment(votes, 3)  # regime 1 = [0, a), regime 2 = [a, b), regime 3 = [b, n)
    regime = [0 if i < a else 1 if i < b else 2 for i in range(n)]
    relabelled = [plrs[i] for i in range(n) if regime[i] != votes[i]]

    # ---- 2A / 2B
    quality = [_quality(ft, swa) for ft, swa in zip(ft_acc, swa_acc)]
    mean_q = [float(np.mean(q)) if q else None for q in quality]
    known = [mean_q[i] for i in range(b) if mean_q[i] is not None]  # regimes 1 and 2
    best = max(known) if known else None
    quality_stats = _per_plr("quality_stats", quality_stats, n, allow_none=True)
    stats = {i: quality_stats[i] for i in range(b) if quality_stats[i] is not None and quality[i]}
    if stats and min(q[2] for q in stats.values()) >= min_seeds:
        top = stats[max(stats, key=lambda i: (stats[i][0], -i))]
        votes2 = [None if i not in stats else (0 if indistinguishable(top, stats[i], z) else 1) for i in range(a, b)]
        two_a_test = (f"statistical: mean fine-tuned/SWA accuracy within {z:g} standard errors over seeds of "
                      f"the best ({top[0]:.4f})")
    else:
        votes2 = [None if not quality[i] or best is None else (0 if min(quality[i]) >= best - quality_tol else 1)
                  for i in range(a, b)]
        two_a_test = (f"fixed tolerance (fewer than {min_seeds} seeds per PLR): every fine-tuned/SWA accuracy "
                      f"within {quality_tol:g} of the best mean")
    determined = any(v is not None for v in votes2)
    c = None  # 2A = [a, c), 2B = [c, b)
    if determined:
        # the best regime-2 PLR, when it votes 2A, stays in 2A: a tie between "2A empty" and "2A up to
        # the best" (PLRs below the best voting 2B) goes to the best
        top = max((i for i in range(a, b) if mean_q[i] is not None), key=lambda i: (mean_q[i], -i))
        keep = top - a + 1 if votes2[top - a] == 0 else 0
        c = a + segment([None] * keep + votes2[keep:], 2)[0] if keep else a + segment(votes2, 2)[0]
        c = max(c, a + keep)
    labels = []
    for i in range(n):
        if regime[i] == 0:
            labels.append("1")
        elif regime[i] == 2:
            labels.append("3")
        else:
            labels.append("2" if c is None else "2A" if i < c else "2B")

    # ---- boundaries: log-midpoint between the last PLR below and the first above
    def between(split):
        return [plrs[split - 1], plrs[split]] if 0 < split < n else None

    brackets = {"1|2": between(a), "2A|2B": between(c) if c is not None and a < c < b else None,
                "2|3": between(b)}
    boundaries = {k: (_geo(*v) if v else None) for k, v in brackets.items()}
    if practical_p is not None and a == practical_p:
        brackets["1|2"] = [plrs[a], plrs[a]]
        boundaries["1|2"] = plrs[a]

    # ---- recommendation: the best measured result; its regime says whether it sits where the paper
    # finds the best PLRs (2A, just above the 1|2 boundary)
    cand = [i for i in range(b) if mean_q[i] is not None]
    if cand and (c is not None or a == b):  # results in regime 2, or no regime 2 at all
        i = max(cand, key=lambda j: (mean_q[j], -j))
        where = {"2A": "in 2A, just above the 1|2 boundary, where the paper finds the best PLRs",
                 "1": "in regime 1, below the detected 1|2 boundary (the paper finds the best PLRs just above "
                      "it; with few seeds a PLR next to the boundary can fall on either side)"}
        rec, reason = plrs[i], (f"the PLR with the best mean fine-tuned/SWA test accuracy ({mean_q[i]:.4f}), "
                                + where.get(labels[i], f"in regime {labels[i]}"))
        if a == b:
            reason += "; no PLR of the sweep reaches regime 2: extend the sweep to larger PLRs"
    elif b == 0:
        rec, reason = None, "every PLR diverges (regime 3): extend the sweep to smaller PLRs"
    elif a == b:
        rec, reason = plrs[a - 1], ("no PLR of the sweep reaches regime 2: this is the largest regime-1 "
                                    "PLR; extend the sweep to larger PLRs")
    else:
        rec, reason = plrs[a], ("no fine-tuning/SWA results in regime 2, so 2A is unknown: this is the smallest "
                                "regime-2 PLR, just above the 1|2 boundary, where 2A starts")
    if a == 0 and b > 0 and not practical:
        reason += ("; but no PLR of the sweep reached regime 1 (a converged or still clearly falling loss): "
                   "pre-training may be too short for the loss to converge, or the grid may start too high - "
                   "the 1|2 boundary may lie below the sweep")
    return {"labels": labels, "raw_labels": [str(v + 1) for v in votes], "relabelled": relabelled,
            "quality": mean_q, "best_quality": best, "boundaries": boundaries, "brackets": brackets,
            "recommended_plr": rec, "reason": reason, "two_a_test": two_a_test,
            "rule": rule_text(div_tol, loss_tol, decay_ratio, curve_window, quality_tol, practical, z, min_seeds)}


def indistinguishable(best, q, z=RANGE_Z):
    """Is a PLR's quality q = (mean, std, n) over n seeds (std: the population std) within z standard
    errors of the difference of the best's, sqrt(s_b^2 / (n_b - 1) + s^2 / (n - 1))? Needs n >= 2."""
    (mb, sb, nb), (m, sd, n) = best, q
    return mb - m <= z * (sb ** 2 / (nb - 1) + sd ** 2 / (n - 1)) ** 0.5


def recommended_range(plrs, quality, z=RANGE_Z, min_seeds=STAT_MIN_SEEDS):
    """The PLRs whose fine-tuned/SWA accuracy is statistically indistinguishable from the best.

    quality: per PLR None (no results, or not a candidate) or (mean, std, n) over its n seeds of the
    quality the recommendation ranks by (std: the population std over the seeds). A PLR is in the
    set if best mean - its mean is at most z x the standard error of that difference,
    sqrt(s_b^2 / (n_b - 1) + s_p^2 / (n_p - 1)) (the sample variance from the population std).
    With fewer than min_seeds seeds the spread is not known well enough: no range.
    Returns {"range": [lo, hi] or None, "plrs": [...] or None, "reason": str}.
    """
    known = [(p, q) for p, q in zip(plrs, quality) if q is not None]
    if not known:
        return {"range": None, "plrs": None, "reason": "no fine-tuning/SWA results: no range can be given"}
    fewest = min(q[2] for _, q in known)
    if fewest < min_seeds:
        return {"range": None, "plrs": None,
                "reason": f"{'one seed' if fewest == 1 else f'{fewest} seeds'} per PLR: too few to judge the spread "
                          f"over seeds, so no range can be given (run at least {min_seeds} seeds)"}
    pb, top = max(known, key=lambda kq: kq[1][0])
    inside = [p for p, q in known if indistinguishable(top, q, z)]
    return {"range": [min(inside), max(inside)], "plrs": inside,
            "reason": f"PLRs whose mean fine-tuned/SWA test accuracy is within {z:g} standard errors (over seeds) "
                      f"of the best ({top[0]:.4f} at PLR {pb:g})"}

