"""Regime labels, boundaries, the recommended PLR and its range from a PLR sweep (docs/protocol.md
sections 1, 4, 6). Pure functions on already-aggregated numbers (one `PLRResult` per PLR); numpy only.

    out = label_regimes([PLRResult(1e-3, train_loss=1e-4, train_acc=1.0, score=(0.91, 0.004, 5)), ...], chance=0.5)
    out["labels"]           # ["1", ..., "2A", ..., "2B", ..., "3"], one per PLR
    out["boundaries"]       # {"1|2": 0.0087, "2A|2B": 0.0205, "2|3": 0.049}  (None when absent)
    out["brackets"]         # {"1|2": [0.0075, 0.01], ...}: the two PLRs each boundary lies between
    out["recommended_plr"]  # 0.01, with out["reason"] saying why
    out["range"]            # [0.0075, 0.0133]: the PLRs as good as the best, out["range_plrs"] each of them
    print(out["rule"])      # the rule below in words, with the thresholds used

A PLR's score is what the choice is made on: the mean over seeds of each seed's mean fine-tuned
(every FLR) and SWA accuracy on the validation set (on the test set where a sweep has no validation
set: the paper's protocol for its image setups), with its spread over seeds.

The rule (thresholds: the fields of `Rule`; every report.md prints it with the values used):

1. Learned or not: a PLR learned if its final train accuracy is above chance + DIV_TOL x (1 - chance)
   (0.55 for balanced binary data, 0.19 for 10 classes, 0.109 for 100) and its loss is finite.
   A PLR that did not learn is regime 3 (divergence), unless it lies below every PLR that learned:
   then its LR was too small to move in this budget: regime 1, not converged (never recommended).
2. A PLR that learned is regime 1 (convergence) if its final train loss is below LOSS_TOL (1e-2:
   regime 1 ends near 1e-5..1e-3 in the synthetic task and near 1e-3 on CIFAR, regime 2 sits at
   0.05..1), or if its loss is still clearly falling (over the last half of pre-training the mean
   of the last CURVE_WINDOW of points is below DECAY_RATIO x the mean of the first); else regime 2
   (chaotic equilibrium).
3. Cleanup: regimes must run 1, 2, 3 as the PLR grows. The two split points (each regime may be
   empty) are those that disagree with the fewest verdicts; ties go to the lower split point.
   Clean inputs come through unchanged; an isolated noisy PLR is relabelled (`relabelled`).
4. As good as the best: the best PLR is the regime-1/2 PLR that learned with the highest score
   (ties: the lower PLR). Another PLR is as good as the best when the best's mean minus its mean is
   at most Z standard errors of that difference, sqrt(s_b^2 / (n_b - 1) + s^2 / (n - 1)) over seeds
   (s: the population std), given at least MIN_SEEDS seeds per PLR; with fewer seeds the spread is
   unknown and it is within TOLERANCE of the best mean instead (0.02 = two percentage points).
   That one test makes the range, 2A and the reason agree:
   - the recommended range: the regime-1/2 PLRs that learned and are as good as the best;
   - 2A: the regime-2 PLRs as good as the best; 2B: the other regime-2 PLRs. The paper finds 2A as
     the lower part of regime 2; where noise puts a 2B PLR below a 2A one, the labels say so.
   Without scores (a scan: pre-training only) regime 2 is not split: its label is "2".
5. Boundaries: the geometric mean of the last PLR below and the first PLR above (log-midpoint);
   `brackets` gives the pair. "1|2" and "2|3" are None when the sweep has no PLR on one side; "2A|2B"
   lies above the highest 2A PLR, when a regime-2 PLR follows it.
6. Recommended PLR: the best PLR (step 4), its regime named in the reason. Without scores (a scan):
   the smallest regime-2 PLR that learned, just above 1|2, where 2A starts; with no regime 2 the
   largest regime-1 PLR that learned (extend the sweep upwards); if nothing learned, None. A sweep
   in which no PLR reached regime 1 says so instead of placing the pick next to a 1|2 boundary: the
   boundary may lie below the grid, or pre-training was too short for any loss to converge.

Practical setting (docs/protocol.md section 6, `practical=True`): with weight decay and momentum the
training loss does not converge, so step 2 is replaced: the 1|2 boundary is taken at the PLR p with
the best pre-training accuracy (on the selection split) among the PLRs that learned (ties: the lower PLR). PLRs below p
are regime 1, p and above regime 2; the boundary is p itself and its bracket [p, p].
"""
import dataclasses
import itertools
import math

import numpy as np

BOUNDARY_KEYS = ("1|2", "2A|2B", "2|3")


@dataclasses.dataclass(frozen=True)
class Rule:
    """The rule's thresholds (module docstring)."""
    div_tol: float = 0.1        # learned: train acc more than this fraction of (1 - chance) above chance
    loss_tol: float = 1e-2      # regime 1: final train loss below this
    decay_ratio: float = 0.5    # regime 1: the late window's mean loss below this x the early window's
    curve_window: float = 0.25  # fraction of a curve's points (at least one) averaged at each end
    z: float = 2.0              # as good as the best: within z standard errors of the difference
    min_seeds: int = 3          # seeds per PLR from which the spread over seeds is trusted
    tolerance: float = 0.02     # with fewer seeds: within this (absolute) of the best mean

    def text(self, practical=False, split="validation"):
        """The rule in a few sentences, with these thresholds (report.md prints it)."""
        step2 = (f"Practical setting (training loss does not converge): the 1|2 boundary is the PLR with the best "
                 f"pre-training {split} accuracy among the PLRs that learned; smaller PLRs are regime 1, it and "
                 f"larger ones regime 2." if practical else
                 f"A PLR that learned is regime 1 (convergence) if its final train loss is below {self.loss_tol:g} or "
                 f"its loss is still falling (the mean of the last {self.curve_window:.0%} of the last half of "
                 f"pre-training below {self.decay_ratio:g} x the mean of its first {self.curve_window:.0%}); else "
                 f"regime 2 (chaotic equilibrium).")
        return "\n".join([
            f"A PLR learned if its final train accuracy is above chance + {self.div_tol:g} x (1 - chance) and its "
            f"loss is finite. One that did not is regime 3 (divergence), or regime 1 (too small to move yet, never "
            f"recommended) when it lies below every PLR that learned.",
            step2,
            "Regimes must run 1, 2, 3 with growing PLR: the split points are the ones that disagree with the "
            "fewest verdicts (ties: the lower split).",
            f"Score: each seed's mean fine-tuned (every FLR) and SWA {split} accuracy, averaged over seeds. The best "
            f"is the regime-1/2 PLR that learned with the highest score (ties: the lower PLR). A PLR is as good as "
            f"the best if its score is within {self.z:g} standard errors over seeds of the best's (with at least "
            f"{self.min_seeds} seeds per PLR), else within {self.tolerance:g} of it. The recommended range: the "
            f"regime-1/2 PLRs as good as the best; 2A: the regime-2 PLRs as good as the best; 2B: the other "
            f"regime-2 PLRs. Without scores regime 2 is not split.",
            "Each boundary is the geometric mean of the two neighbouring PLRs it lies between (none if the sweep "
            "has no PLR on one side)" + (", except 1|2 in the practical setting." if practical else "."),
            "The recommended PLR is the best one; without scores (a scan) the smallest regime-2 PLR that learned.",
        ])


RULE = Rule()


@dataclasses.dataclass
class PLRResult:
    """What the rule reads of one PLR of a sweep: means over its seeds."""
    plr: float
    train_loss: float           # final pre-training train loss
    train_acc: float            # final pre-training train accuracy (fraction)
    pretrain_acc: float = None  # final pre-training accuracy on the selection split (the practical rule)
    curve: list = None          # [(step, train loss), ...] of the last half of pre-training
    score: tuple = None         # (mean, std, seeds) of the score the choice is made on, or None


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


def still_decreasing(curve, decay_ratio=RULE.decay_ratio, curve_window=RULE.curve_window):
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


def as_good(best, q, rule=RULE):
    """Is a score q = (mean, std, n) over n seeds as good as the best's: with at least rule.min_seeds
    seeds each, within rule.z standard errors of the difference, sqrt(s_b^2 / (n_b - 1) + s^2 / (n - 1))
    (the sample variances from the population stds); else within rule.tolerance of the best mean."""
    (mb, sb, nb), (m, sd, n) = best, q
    if min(nb, n) >= rule.min_seeds:
        return mb - m <= rule.z * (sb ** 2 / (nb - 1) + sd ** 2 / (n - 1)) ** 0.5
    return mb - m <= rule.tolerance


def standard_error(q):
    """The standard error of a mean over seeds, std / sqrt(n - 1) (std: the population std), or None."""
    mean, std, n = q
    return std / math.sqrt(n - 1) if n > 1 else None


def verdicts(sweep, chance, practical, rule):
    """Per PLR: learned (bool) and the verdict 0 (regime 1), 1 (regime 2), 2 (regime 3), and for the
    practical rule the index of its 1|2 PLR (or None)."""
    div_at = chance + rule.div_tol * (1 - chance)
    learned = [math.isfinite(float(r.train_loss)) and math.isfinite(float(r.train_acc)) and float(r.train_acc) > div_at
               for r in sweep]
    n, first = len(sweep), min((i for i in range(len(sweep)) if learned[i]), default=len(sweep))
    p = None
    if practical:
        cand = [i for i in range(n) if learned[i] and sweep[i].pretrain_acc is not None
                and math.isfinite(float(sweep[i].pretrain_acc))]
        if not cand and any(learned):
            raise ValueError("practical=True: no PLR that learned has a pre-training accuracy (pretrain_acc)")
        p = max(cand, key=lambda i: (float(sweep[i].pretrain_acc), -i)) if cand else None  # ties: lower PLR
    votes = []
    for i, r in enumerate(sweep):
        if not learned[i]:
            votes.append(0 if i < first < n else 2)  # below every PLR that learned: too small to move yet
        elif practical:
            votes.append(0 if i < p else 1)
        else:
            still = float(r.train_loss) < rule.loss_tol or still_decreasing(r.curve, rule.decay_ratio, rule.curve_window)
            votes.append(0 if still else 1)
    return learned, votes, p


def label_regimes(sweep, chance, practical=False, rule=RULE, split="validation"):
    """Regime labels, boundaries, the recommended PLR and its range (the rule: module docstring).

    sweep: one PLRResult per PLR, PLRs strictly increasing. chance: the accuracy of a constant
    prediction (1 / classes). practical: the practical rule for the 1|2 boundary (needs pretrain_acc).
    split: the split the scores were measured on ("validation" or "test"), for the texts.

    Returns a dict: labels (per PLR "1", "2A", "2B", "2" (regime 2, not split: no scores) or "3"),
    raw_labels (the verdicts "1"/"2"/"3" before the cleanup), relabelled (PLRs the cleanup changed),
    not_learned (PLRs below one that learned that did not learn themselves), best (index or None),
    boundaries {"1|2", "2A|2B", "2|3"} (float or None), brackets (same keys, [lo, hi] or None),
    recommended_plr, reason, range ([lo, hi] or None), range_plrs, range_reason, two_a_test, rule.
    """
    plrs = [float(r.plr) for r in sweep]
    n = len(plrs)
    if n == 0:
        raise ValueError("no PLRs: the sweep is empty")
    if any(p <= 0 for p in plrs) or any(b <= a for a, b in zip(plrs, plrs[1:])):
        raise ValueError(f"plrs must be positive and strictly increasing, got {plrs}")
    if not 0 <= chance < 1:
        raise ValueError(f"chance must be the constant-prediction accuracy in [0, 1), got {chance}")
    if any(r.train_loss is None or r.train_acc is None for r in sweep):
        raise ValueError("every PLR needs its pre-training train loss and accuracy")
    learned, votes, p = verdicts(sweep, chance, practical, rule)
    a, b = segment(votes, 3)  # regime 1 = [0, a), regime 2 = [a, b), regime 3 = [b, n)
    regime = [0 if i < a else 1 if i < b else 2 for i in range(n)]
    not_learned = [plrs[i] for i in range(b) if not learned[i]]

    # ---- the best PLR and the PLRs as good as it (range, 2A)
    cand = [i for i in range(b) if learned[i] and sweep[i].score is not None]
    best = max(cand, key=lambda i: (sweep[i].score[0], -i)) if cand else None
    good = [i for i in cand if as_good(sweep[best].score, sweep[i].score, rule)] if cand else []
    stat = bool(cand) and min(sweep[i].score[2] for i in cand) >= rule.min_seeds
    labels = ["1" if g == 0 else "3" if g == 2 else ("2" if best is None else "2A" if i in good else "2B")
              for i, g in enumerate(regime)]

    # ---- boundaries: log-midpoint between the last PLR below and the first above
    def between(s):
        return [plrs[s - 1], plrs[s]] if 0 < s < n else None

    top_2a = max((i for i in range(a, b) if labels[i] == "2A"), default=None)
    brackets = {"1|2": between(a), "2A|2B": between(top_2a + 1) if top_2a is not None and top_2a + 1 < b else None,
                "2|3": between(b)}
    boundaries = {k: (math.sqrt(v[0] * v[1]) if v else None) for k, v in brackets.items()}
    if practical and p is not None and a == p:
        brackets["1|2"], boundaries["1|2"] = [plrs[a], plrs[a]], plrs[a]

    # ---- the recommendation, its range and the texts
    test = (f"within {rule.z:g} standard errors over seeds of the best score" if stat else
            f"within {rule.tolerance:g} of the best score (fewer than {rule.min_seeds} seeds per PLR: a fixed "
            f"tolerance, not a statistical test)")
    rec, reason = recommend(sweep, labels, learned, (a, b), best, split, practical)
    out = {"labels": labels, "raw_labels": [str(v + 1) for v in votes],
           "relabelled": [plrs[i] for i in range(n) if regime[i] != votes[i]], "not_learned": not_learned,
           "best": best, "boundaries": boundaries, "brackets": brackets, "recommended_plr": rec, "reason": reason,
           "range": [plrs[good[0]], plrs[good[-1]]] if good else None, "range_plrs": [plrs[i] for i in good] or None,
           "range_reason": (f"the PLRs of regimes 1 and 2 whose score is {test}" if good else
                            "no fine-tuning/SWA scores: no range can be given"),
           "two_a_test": f"a regime-2 PLR is 2A if its score is {test}" if best is not None else
                         "no fine-tuning/SWA scores: regime 2 is not split",
           "rule": rule.text(practical, split)}
    return out


def recommend(sweep, labels, learned, splits, best, split, practical):
    """The recommended PLR and the reason, in the order of step 6 of the rule; splits: (a, b), regime 1
    = [0, a), regime 2 = [a, b)."""
    plrs, (a, b) = [float(r.plr) for r in sweep], splits
    where = {"2A": "in 2A: regime 2 and as good as the best" + (
                 ", just above the 1|2 boundary, where the paper finds the best PLRs" if a > 0 else ""),
             "1": "in regime 1, below the detected 1|2 boundary (the paper finds the best PLRs just above it; with "
                  "few seeds a PLR next to the boundary can fall on either side)"}
    if best is not None:
        m, sd, k = sweep[best].score
        se = standard_error(sweep[best].score)
        rec = plrs[best]
        reason = (f"the PLR with the best mean fine-tuned/SWA {split} accuracy ({m:.4f}"
                  + (f" +- {se:.4f} over {k} seeds" if se is not None else ", one seed") + "), "
                  + where.get(labels[best], f"in regime {labels[best]}"))
        if a == b:
            reason += "; no PLR of the sweep reaches regime 2: extend the sweep to larger PLRs"
    elif not any(learned):
        rec, reason = None, "no PLR learned (regime 3 throughout): extend the sweep to smaller PLRs"
    elif a == b:
        rec = max(plrs[i] for i in range(a) if learned[i])
        reason = "no PLR of the sweep reaches regime 2: this is the largest regime-1 PLR; extend the sweep upwards"
    else:
        rec = next(plrs[i] for i in range(a, b) if learned[i])
        reason = ("no fine-tuning/SWA scores, so 2A is unknown: this is the smallest regime-2 PLR"
                  + (", just above the 1|2 boundary, where 2A starts" if a > 0 else ""))
    if a == 0 and b > 0 and not practical:
        reason += ("; no PLR of the sweep reached regime 1 (a converged or still clearly falling loss), so the 1|2 "
                   "boundary is not known: it may lie below the grid, or pre-training was too short for any loss to "
                   "converge")
    return rec, reason
