"""Regime labelling on constructed sweeps with known answers (analysis/regimes.py)."""
import math

import numpy as np
import pytest

from analysis.regimes import (DIV_TOL, LOSS_TOL, QUALITY_TOL, RULE, label_regimes, recommended_range, rule_text, segment,
                           still_decreasing)

# 12 PLRs: regime 1 = first 4, regime 2 = next 5, regime 3 = last 3
PLRS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5]
LOSS = [1e-5, 1e-5, 2e-5, 3e-5, 0.1, 0.15, 0.2, 0.25, 0.3, 0.69, 0.70, 0.69]
ACC = [1.0, 1.0, 1.0, 1.0, 0.97, 0.95, 0.92, 0.90, 0.85, 0.50, 0.51, 0.49]
CLEAN = ["1"] * 4 + ["2"] * 5 + ["3"] * 3

# fine-tuning (two FLRs) and SWA: 2A = 2e-3 and 5e-3 (all results within 1 pp of the best, 0.91 at 5e-3)
FT = [{1e-5: 0.88, 1e-4: 0.885}] * 4 + [
    {1e-5: 0.903, 1e-4: 0.902}, {1e-5: 0.91, 1e-4: 0.905},   # 2A
    {1e-5: 0.90, 1e-4: 0.85}, {1e-5: 0.87, 1e-4: 0.80}, {1e-5: 0.80, 1e-4: 0.70},  # 2B: FLR-dependent, worse
] + [{1e-5: 0.5, 1e-4: 0.5}] * 3
SWA = [0.89] * 4 + [0.91, 0.915, 0.88, 0.82, 0.75] + [0.5] * 3


def _geo(a, b):
    return math.sqrt(a * b)


def test_clean_sweep_labels_and_boundaries():
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5)
    assert out["labels"] == CLEAN  # no FT/SWA: regime 2 stays "2"
    assert out["raw_labels"] == ["1"] * 4 + ["2"] * 5 + ["3"] * 3 and out["relabelled"] == []
    assert out["brackets"] == {"1|2": [1e-3, 2e-3], "2A|2B": None, "2|3": [5e-2, 0.1]}
    assert out["boundaries"]["1|2"] == pytest.approx(_geo(1e-3, 2e-3))
    assert out["boundaries"]["2|3"] == pytest.approx(_geo(5e-2, 0.1))
    assert out["boundaries"]["2A|2B"] is None


def test_two_a_two_b_and_recommendation():
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=FT, swa_acc=SWA)
    assert out["labels"] == ["1"] * 4 + ["2A"] * 2 + ["2B"] * 3 + ["3"] * 3
    assert out["brackets"]["2A|2B"] == [5e-3, 1e-2]
    assert out["boundaries"]["2A|2B"] == pytest.approx(_geo(5e-3, 1e-2))
    assert out["best_quality"] == pytest.approx(np.mean([0.91, 0.905, 0.915]))
    assert out["recommended_plr"] == 5e-3  # the 2A PLR with the best mean FT/SWA accuracy
    assert "2A" in out["reason"]
    # 1|2 and 2|3 do not depend on the fine-tuning results
    assert out["brackets"]["1|2"] == [1e-3, 2e-3] and out["brackets"]["2|3"] == [5e-2, 0.1]


def test_recommendation_tie_goes_to_lower_plr():
    ft = list(FT)
    ft[4] = ft[5]
    swa = list(SWA)
    swa[4] = swa[5]
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft, swa_acc=swa)
    assert out["labels"][4:6] == ["2A", "2A"] and out["recommended_plr"] == 2e-3


@pytest.mark.parametrize("i, loss, acc", [
    (6, 1e-4, 1.0),    # a converging-looking PLR inside regime 2
    (6, 0.2, 0.52),    # a chance-level PLR inside regime 2
    (1, 0.2, 0.95),    # a chaotic-looking PLR inside regime 1
    (10, 0.2, 0.9),    # a trainable PLR inside regime 3
])
def test_noisy_plr_is_cleaned(i, loss, acc):
    losses, accs = list(LOSS), list(ACC)
    losses[i], accs[i] = loss, acc
    out = label_regimes(PLRS, losses, accs, chance=0.5)
    assert out["raw_labels"] != ["1"] * 4 + ["2"] * 5 + ["3"] * 3
    assert out["labels"] == CLEAN
    assert out["relabelled"] == [PLRS[i]]
    assert out["brackets"] == {"1|2": [1e-3, 2e-3], "2A|2B": None, "2|3": [5e-2, 0.1]}


def test_noisy_two_a_vote_is_cleaned():
    # 2e-2 (deep in 2B) happens to reach the best quality: 2A stays the contiguous lower part
    ft, swa = list(FT), list(SWA)
    ft[7], swa[7] = {1e-5: 0.91, 1e-4: 0.91}, 0.91
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft, swa_acc=swa)
    assert out["labels"] == ["1"] * 4 + ["2A"] * 2 + ["2B"] * 3 + ["3"] * 3
    assert out["recommended_plr"] == 5e-3


def test_no_finetune_data_leaves_two_unknown():
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=[None] * 12, swa_acc=[None] * 12)
    assert out["labels"] == CLEAN
    assert out["boundaries"]["2A|2B"] is None and out["brackets"]["2A|2B"] is None
    assert out["recommended_plr"] == 2e-3  # smallest regime-2 PLR
    assert "unknown" in out["reason"] and "smallest regime-2" in out["reason"]
    # results only in regime 1 do not decide 2A either
    ft = FT[:4] + [None] * 8
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft)
    assert out["labels"] == CLEAN and out["recommended_plr"] == 2e-3


def test_missing_results_do_not_vote():
    # SWA only, and no results at 2e-3: 5e-3 votes 2A, so 2e-3 (below it) is 2A by position
    swa = list(SWA)
    swa[4] = None
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, swa_acc=swa)
    assert out["labels"] == ["1"] * 4 + ["2A"] * 2 + ["2B"] * 3 + ["3"] * 3
    assert out["quality"][4] is None and out["recommended_plr"] == 5e-3
    # NaN / None accuracies inside an FT dict are ignored
    ft = list(FT)
    ft[6] = {1e-5: float("nan"), 1e-4: None}
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft)
    assert out["quality"][6] is None
    assert out["labels"] == ["1"] * 4 + ["2A"] * 2 + ["2B"] * 3 + ["3"] * 3


def test_empty_two_a():
    # every regime-2 PLR is worse than regime 1: all 2B, recommend the best PLR overall
    ft = [{1e-5: 0.9, 1e-4: 0.9}] * 4 + [{1e-5: 0.85, 1e-4: 0.8}] * 5 + [{1e-5: 0.5}] * 3
    ft[2] = {1e-5: 0.92, 1e-4: 0.92}
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft)
    assert out["labels"] == ["1"] * 4 + ["2B"] * 5 + ["3"] * 3
    assert out["boundaries"]["2A|2B"] is None
    assert out["recommended_plr"] == 5e-4 and "in regime 1, below the detected 1|2 boundary" in out["reason"]


def test_no_regime_three():
    out = label_regimes(PLRS[:9], LOSS[:9], ACC[:9], chance=0.5, ft_acc=FT[:9], swa_acc=SWA[:9])
    assert out["labels"] == ["1"] * 4 + ["2A"] * 2 + ["2B"] * 3
    assert out["boundaries"]["2|3"] is None and out["brackets"]["2|3"] is None
    assert out["brackets"]["1|2"] == [1e-3, 2e-3] and out["recommended_plr"] == 5e-3


def test_no_regime_one():
    out = label_regimes(PLRS[4:], LOSS[4:], ACC[4:], chance=0.5)
    assert out["labels"] == ["2"] * 5 + ["3"] * 3
    assert out["boundaries"]["1|2"] is None and out["brackets"]["2|3"] == [5e-2, 0.1]
    assert out["recommended_plr"] == 2e-3
    assert "no PLR of the sweep reached regime 1" in out["reason"]  # e.g. a scan cut too short
    assert "reached regime 1" not in label_regimes(PLRS, LOSS, ACC, chance=0.5)["reason"]


def test_no_regime_two():
    keep = [0, 1, 2, 3, 9, 10, 11]
    out = label_regimes([PLRS[i] for i in keep], [LOSS[i] for i in keep], [ACC[i] for i in keep], chance=0.5)
    assert out["labels"] == ["1"] * 4 + ["3"] * 3
    # both thresholds lie in the same gap: regime 2 is narrower than the grid spacing
    assert out["brackets"]["1|2"] == out["brackets"]["2|3"] == [1e-3, 0.1]
    assert out["boundaries"]["2A|2B"] is None
    assert out["recommended_plr"] == 1e-3 and "larger PLRs" in out["reason"]


def test_everything_diverges_or_converges():
    out = label_regimes(PLRS[9:], LOSS[9:], ACC[9:], chance=0.5)
    assert out["labels"] == ["3"] * 3 and out["recommended_plr"] is None
    assert "smaller PLRs" in out["reason"]
    assert all(v is None for v in out["boundaries"].values())
    out = label_regimes(PLRS[:4], LOSS[:4], ACC[:4], chance=0.5)
    assert out["labels"] == ["1"] * 4 and out["recommended_plr"] == 1e-3
    assert all(v is None for v in out["boundaries"].values())


def test_divergence_is_relative_to_chance():
    # CIFAR-10: chance 0.1, threshold 0.1 + DIV_TOL * 0.9 = 0.19
    plrs = [1e-3, 1e-2, 0.1, 1.0]
    loss = [1e-3, 0.5, 2.0, float("nan")]
    acc = [1.0, 0.85, 0.25, 0.1]
    out = label_regimes(plrs, loss, acc, chance=0.1)
    assert out["labels"] == ["1", "2", "2", "3"]
    acc[2] = 0.1 + DIV_TOL * 0.9 - 1e-9
    assert label_regimes(plrs, loss, acc, chance=0.1)["labels"] == ["1", "2", "3", "3"]
    # a non-finite loss counts as divergence whatever the accuracy
    loss[2], acc[2] = float("inf"), 0.5
    assert label_regimes(plrs, loss, acc, chance=0.1)["labels"] == ["1", "2", "3", "3"]


def test_still_decreasing_curve_is_regime_one():
    steps = np.arange(20000, 40001, 500)
    falling = [(int(s), 0.05 * (40000 / s) ** 3) for s in steps]  # ~0.4 -> 0.05 over the last half
    rng = np.random.default_rng(0)
    flat = [(int(s), 0.05 * (1 + 0.3 * rng.standard_normal())) for s in steps]  # noisy, stationary
    assert still_decreasing(falling) and not still_decreasing(flat)
    curves = [None] * 12
    curves[4] = falling
    losses = list(LOSS)
    losses[4] = falling[-1][1]  # 0.05 > LOSS_TOL, but still falling
    out = label_regimes(PLRS, losses, ACC, chance=0.5, loss_curves=curves)
    assert losses[4] > LOSS_TOL
    assert out["labels"] == ["1"] * 5 + ["2"] * 4 + ["3"] * 3
    assert out["brackets"]["1|2"] == [2e-3, 5e-3]
    curves[4] = flat
    out = label_regimes(PLRS, losses, ACC, chance=0.5, loss_curves=curves)
    assert out["labels"] == CLEAN


def test_still_decreasing_edge_cases():
    assert not still_decreasing(None) and not still_decreasing([]) and not still_decreasing([(1, 0.3)])
    assert not still_decreasing([(1, 0.5), (2, None)])
    assert still_decreasing([(2, 0.1), (1, 0.5)])            # sorted by step; last/first = 0.2
    assert not still_decreasing([(1, 0.5), (2, 0.3)])        # 0.6 >= DECAY_RATIO
    assert still_decreasing([(1, 0.5), (2, float("nan")), (3, 0.1)])
    assert not still_decreasing([(1, 0.0), (2, 0.0)])


def test_practical_boundary_at_best_pretrain_accuracy():
    plrs = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0]
    # weight decay keeps the loss from converging at any PLR
    loss = [0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 2.3]
    acc = [0.99, 0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.87, 0.83, 0.8, 0.72, 0.65, 0.1]
    pt = [0.90, 0.905, 0.91, 0.92, 0.935, 0.93, 0.92, 0.91, 0.90, 0.88, 0.85, 0.80, 0.1]
    out = label_regimes(plrs, loss, acc, chance=0.1, pt_test_acc=pt, practical=True)
    assert out["labels"] == ["1"] * 4 + ["2"] * 8 + ["3"]
    assert out["boundaries"]["1|2"] == 2e-3 and out["brackets"]["1|2"] == [2e-3, 2e-3]
    assert out["brackets"]["2|3"] == [0.5, 1.0]
    assert out["recommended_plr"] == 2e-3 and "Practical" in out["rule"]
    # with fine-tuning results 2A/2B split as usual
    # FLR keys as report.py writes them ("%.3g" strings)
    ft = [{"0.0001": 0.94}] * 4 + [{"0.0001": 0.952, "0.002": 0.951}, {"0.0001": 0.955, "0.002": 0.955},
                                   {"0.0001": 0.95, "0.002": 0.948}, {"0.0001": 0.94, "0.002": 0.93}] \
        + [{"0.0001": 0.9}] * 4 + [None]
    out = label_regimes(plrs, loss, acc, chance=0.1, pt_test_acc=pt, practical=True, ft_acc=ft)
    assert out["labels"] == ["1"] * 4 + ["2A"] * 3 + ["2B"] * 5 + ["3"]
    assert out["recommended_plr"] == 5e-3 and out["brackets"]["2A|2B"] == [1e-2, 2e-2]
    # the non-practical rule would call all of these regime 2 (losses above LOSS_TOL)
    assert label_regimes(plrs, loss, acc, chance=0.1)["labels"][:4] == ["2"] * 4
    with pytest.raises(ValueError, match="pt_test_acc"):
        label_regimes(plrs, loss, acc, chance=0.1, practical=True)


def test_synthetic_grid_brackets():
    """Numbers shaped like the synthetic sweep of docs/protocol.md section 7 give its boundaries."""
    plrs = list(np.logspace(-4.5, -2.25, 10)[:-1]) + list(np.logspace(-2.25, -1.25, 9)[:-1]) \
        + list(np.logspace(-1.25, 0, 6))
    assert len(plrs) == 23
    i12 = 11  # 1e-2: first non-converging PLR
    i3 = 17   # 5.62e-2: first chance-level PLR
    loss = [1e-5 * 10 ** (i / 4) for i in range(i12)] + [0.05 + 0.04 * k for k in range(i3 - i12)] \
        + [0.693] * (23 - i3)
    acc = [1.0] * i12 + [0.99 - 0.05 * k for k in range(i3 - i12)] + [0.5] * (23 - i3)
    ft = [{f: 0.90 for f in plrs[:11]}] * i12 + [{f: 0.93 for f in plrs[:11]}] * 3 \
        + [{f: 0.93 - 0.01 * k * j for j, f in enumerate(plrs[:11])} for k in range(1, 4)] \
        + [None] * (23 - i3)
    out = label_regimes(plrs, loss, acc, chance=0.5, ft_acc=ft)
    assert [round(x, 5) for x in out["brackets"]["1|2"]] == [0.0075, 0.01]
    assert [round(x, 4) for x in out["brackets"]["2A|2B"]] == [0.0178, 0.0237]
    assert [round(x, 4) for x in out["brackets"]["2|3"]] == [0.0422, 0.0562]
    assert out["recommended_plr"] == plrs[i12]


def test_segment_ties_and_gaps():
    assert segment([0, 0, 1, 1, 2], 3) == [2, 4]
    assert segment([0, 0, 1, 0, 1, 1], 2) == [2]          # split 2 or 4 cost 1: the lower wins
    assert segment([None, 0, None, 1, None], 2) == [2]    # non-votes cost nothing
    assert segment([None, None], 2) == [0]
    assert segment([2, 2, 0], 3) == [0, 0]                # all regime 3 except a stray 1 at the top
    assert segment([], 3) == [0, 0]


def test_thresholds_are_arguments_and_rule_text():
    # a looser loss tolerance turns the lower regime-2 PLRs into regime 1
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, loss_tol=0.16)
    assert out["labels"] == ["1"] * 6 + ["2"] * 3 + ["3"] * 3
    assert "0.16" in out["rule"]
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=FT, swa_acc=SWA, quality_tol=0.07)
    assert out["labels"][4:9] == ["2A", "2A", "2A", "2B", "2B"]
    assert isinstance(RULE, str) and len(RULE.splitlines()) >= 5
    assert str(LOSS_TOL) in RULE and str(QUALITY_TOL) in RULE and str(DIV_TOL) in RULE
    assert RULE == rule_text()


def test_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        label_regimes([1e-3, 1e-3], [0.1, 0.1], [0.9, 0.9], chance=0.5)
    with pytest.raises(ValueError, match="entries"):
        label_regimes([1e-3, 1e-2], [0.1], [0.9, 0.9], chance=0.5)
    with pytest.raises(ValueError, match="missing"):
        label_regimes([1e-3, 1e-2], [0.1, None], [0.9, 0.9], chance=0.5)
    with pytest.raises(ValueError, match="empty"):
        label_regimes([], [], [], chance=0.5)
    with pytest.raises(ValueError, match="chance"):
        label_regimes([1e-3], [0.1], [0.9], chance=10)


# ---- the recommended range: PLRs indistinguishable from the best, judged by the spread over seeds

def test_range_clear_winner():
    """One PLR far above the others (differences of 10 standard errors): the range is that PLR alone."""
    plrs = [1e-3, 1e-2, 1e-1]
    out = recommended_range(plrs, [(0.80, 0.01, 5), (0.90, 0.01, 5), (0.75, 0.01, 5)])
    assert out["range"] == [1e-2, 1e-2] and out["plrs"] == [1e-2]


def test_range_tie_within_noise():
    """Differences smaller than the seeds' spread: the neighbours join the range; a PLR without
    results (None) never does, and one just beyond 2 standard errors stays out."""
    plrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    se = (0.02 ** 2 / 3 + 0.02 ** 2 / 3) ** 0.5  # std 0.02 over 4 seeds: sample variance 0.02^2 x 4/3
    quality = [(0.90 - 2.5 * se, 0.02, 4), (0.90 - 0.5 * se, 0.02, 4), (0.90, 0.02, 4), None,
               (0.90 - 1.9 * se, 0.02, 4)]
    out = recommended_range(plrs, quality)
    assert out["plrs"] == [1e-3, 1e-2, 1.0] and out["range"] == [1e-3, 1.0]
    assert "2 standard errors" in out["reason"]


def test_range_needs_three_seeds():
    out = recommended_range([1e-3, 1e-2], [(0.8, 0.0, 1), (0.9, 0.0, 1)])
    assert out["range"] is None and "one seed" in out["reason"]
    out = recommended_range([1e-3, 1e-2], [(0.8, 0.01, 2), (0.9, 0.01, 3)])
    assert out["range"] is None and "2 seeds" in out["reason"] and "at least 3" in out["reason"]
    assert recommended_range([1e-3], [None])["range"] is None


def _stats(means, std, n):
    return [None if m is None else (m, std, n) for m in means]


def test_two_a_statistical_with_enough_seeds():
    """With >= 3 seeds the 2A test is the range's (within 2 standard errors over seeds of the best PLR's
    mean quality), so it follows the spread: tight seeds split off a PLR a fixed 0.02 keeps, noisy
    ones keep PLRs 0.02 drops; the best regime-2 PLR stays 2A, and 2A stays the lower part."""
    q = [0.88] * 4 + [0.90, 0.91, 0.905, 0.85, 0.80] + [0.5] * 3  # regime 2 = indices 4..8, best 0.91 at 5e-3
    ft = [{1e-4: v} for v in q]
    two_a = lambda out: [p for p, lab in zip(PLRS, out["labels"]) if lab == "2A"]  # noqa: E731
    fixed = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft)
    assert two_a(fixed) == [2e-3, 5e-3, 1e-2] and "fixed tolerance" in fixed["two_a_test"]
    # std 0.001 over 10 seeds: 2 standard errors = 0.00094; 1e-2 (0.005 below) is 2B, 2e-3 (0.01 below)
    # votes 2B but lies below the best, which keeps it in 2A
    tight = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft, quality_stats=[(v, 0.001, 10) for v in q])
    assert two_a(tight) == [2e-3, 5e-3] and tight["recommended_plr"] == 5e-3
    assert "statistical" in tight["two_a_test"] and "standard errors" in tight["rule"]
    # std 0.05 over 3 seeds: 2 standard errors = 0.1; 2e-2 (0.06 below) is 2A, 5e-2 (0.11 below) is not
    noisy = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft, quality_stats=[(v, 0.05, 3) for v in q])
    assert two_a(noisy) == [2e-3, 5e-3, 1e-2, 2e-2] and noisy["labels"][8] == "2B"
    # 2 seeds: too few, the fixed tolerance stays
    two = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=ft, quality_stats=[(v, 0.05, 2) for v in q])
    assert two["labels"] == fixed["labels"] and "fixed tolerance" in two["two_a_test"]


def test_best_stays_two_a_when_lower_plrs_vote_two_b():
    """Fixed tolerance: the first regime-2 PLR is far worse, the second is the best. "2A empty" and "2A up
    to the best" disagree with one vote each; the tie goes to the best."""
    q = [0.88] * 4 + [0.80, 0.91, 0.85, 0.85, 0.80] + [0.5] * 3
    out = label_regimes(PLRS, LOSS, ACC, chance=0.5, ft_acc=[{1e-4: v} for v in q])
    assert out["labels"][4:9] == ["2A", "2A", "2B", "2B", "2B"] and out["recommended_plr"] == 5e-3
