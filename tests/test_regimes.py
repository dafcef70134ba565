"""Regime labelling on constructed sweeps with known answers (analysis/regimes.py): the regimes and
their cleanup, PLRs too small to move, the one test that makes the range, 2A and the reason agree,
the practical rule, and the texts."""
import math

import numpy as np
import pytest

from analysis.regimes import RULE, PLRResult, Rule, as_good, label_regimes, segment, still_decreasing

# 12 PLRs: regime 1 = first 4, regime 2 = next 5, regime 3 = last 3
PLRS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5]
LOSS = [1e-5, 1e-5, 2e-5, 3e-5, 0.1, 0.15, 0.2, 0.25, 0.3, 0.69, 0.70, 0.69]
ACC = [1.0, 1.0, 1.0, 1.0, 0.97, 0.95, 0.92, 0.90, 0.85, 0.50, 0.51, 0.49]
CLEAN = ["1"] * 4 + ["2"] * 5 + ["3"] * 3
# mean fine-tuned/SWA accuracy per PLR: the best at 5e-3 (0.91); 2e-3 0.005 below it, 1e-2 0.01 below
SCORE = [0.88] * 4 + [0.905, 0.91, 0.90, 0.85, 0.78] + [0.5] * 3


def sweep(loss=LOSS, acc=ACC, score=SCORE, std=0.001, seeds=10, plrs=PLRS, curves=None, pretrain_acc=None):
    """PLRResults of the constructed sweep: scores (mean, std, seeds) where `score` gives a mean."""
    n = len(plrs)
    return [PLRResult(plrs[i], loss[i], acc[i], pretrain_acc=None if pretrain_acc is None else pretrain_acc[i],
                      curve=None if curves is None else curves[i],
                      score=None if score is None or score[i] is None else (score[i], std, seeds)) for i in range(n)]


def labels_of(out):
    return "".join(f"{lab:3}" for lab in out["labels"]).split()


def test_clean_sweep_without_scores():
    out = label_regimes(sweep(score=None), chance=0.5)
    assert out["labels"] == CLEAN  # no scores (a scan): regime 2 is not split
    assert out["raw_labels"] == CLEAN and out["relabelled"] == []
    assert out["brackets"] == {"1|2": [1e-3, 2e-3], "2A|2B": None, "2|3": [5e-2, 0.1]}
    assert out["boundaries"]["1|2"] == pytest.approx(math.sqrt(1e-3 * 2e-3))
    assert out["recommended_plr"] == 2e-3 and "smallest regime-2 PLR, just above the 1|2 boundary" in out["reason"]
    assert out["range"] is None and "no range" in out["range_reason"]


def test_two_a_is_the_regime_two_part_of_the_range():
    # std 0.001 over 10 seeds: 2 standard errors of a difference = 0.00094: 2e-3 (0.005 below) is not as
    # good as the best, so neither 2A nor in the range; the range and 2A are one test
    out = label_regimes(sweep(), chance=0.5)
    assert out["labels"] == ["1"] * 4 + ["2B", "2A", "2B", "2B", "2B"] + ["3"] * 3
    assert out["recommended_plr"] == 5e-3 and out["range_plrs"] == [5e-3] and out["range"] == [5e-3, 5e-3]
    assert "in 2A" in out["reason"] and "0.9100 +- 0.0003 over 10 seeds" in out["reason"]
    assert out["brackets"]["2A|2B"] == [5e-3, 1e-2] and out["boundaries"]["2A|2B"] == pytest.approx(math.sqrt(5e-5))
    # noisy seeds (std 0.02 over 5: 2 s.e. = 0.028): 2e-3 and 1e-2 join, 2e-2 (0.06 below) does not
    out = label_regimes(sweep(std=0.02, seeds=5), chance=0.5)
    assert out["labels"][4:9] == ["2A", "2A", "2A", "2B", "2B"]
    assert out["range_plrs"] == [2e-3, 5e-3, 1e-2]  # regime 1 (0.03 below) is out too
    assert out["brackets"]["2A|2B"] == [1e-2, 2e-2]
    for lab, p in zip(out["labels"], PLRS):  # every 2A PLR is in the range, every regime-2 one outside is 2B
        if p in out["range_plrs"]:
            assert lab in ("1", "2A")
        elif lab.startswith("2"):
            assert lab == "2B"


def test_the_five_plr_sweep_a_new_user_ran():
    """5 PLRs x 3 seeds: the lower regime-2 PLRs at 73.2 % and 77.6 % against the best's 79.8 +- 0.6 %
    are neither 2A nor in the range, and the reason and range say the same."""
    plrs = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    loss, acc = [0.005, 0.3, 0.35, 0.4, 2.3], [0.99, 0.9, 0.88, 0.85, 0.1]
    score = [0.70, 0.732, 0.776, 0.798, None]
    std = [0.01, 0.01, 0.005, 0.0042, 0.0]  # the best's: a 0.3 % standard error over 3 seeds
    s = [PLRResult(p, lo, a, score=None if m is None else (m, sd, 3))
         for p, lo, a, m, sd in zip(plrs, loss, acc, score, std)]
    out = label_regimes(s, chance=0.1)
    assert out["labels"] == ["1", "2B", "2B", "2A", "3"]
    assert out["range_plrs"] == [1e-2] and out["recommended_plr"] == 1e-2
    assert "0.7980 +- 0.0030 over 3 seeds" in out["reason"]


def test_a_plr_too_small_to_move_is_regime_one_and_never_recommended():
    # 1e-4 stayed at chance (loss 2.304 after 5 epochs) below PLRs that learned: not divergence
    plrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    loss, acc = [2.304, 0.005, 0.3, 0.5, 2.31], [0.11, 0.99, 0.9, 0.8, 0.1]
    score = [0.95, 0.80, 0.85, 0.78, 0.10]  # even a (spuriously) high score does not make it the pick
    out = label_regimes([PLRResult(p, lo, a, score=(m, 0.01, 3)) for p, lo, a, m in zip(plrs, loss, acc, score)],
                        chance=0.1)
    assert out["labels"][0] == "1" and out["labels"][-1] == "3" and out["not_learned"] == [1e-4]
    assert out["recommended_plr"] == 1e-2 and 1e-4 not in out["range_plrs"]
    # without scores (a scan) the pick is the smallest regime-2 PLR that learned
    out = label_regimes([PLRResult(p, lo, a) for p, lo, a in zip(plrs, loss, acc)], chance=0.1)
    assert out["labels"] == ["1", "1", "2", "2", "3"] and out["recommended_plr"] == 1e-2


def test_no_regime_one_says_so_and_no_boundary_next_to_the_pick():
    out = label_regimes(sweep(score=None)[4:], chance=0.5)
    assert out["labels"] == ["2"] * 5 + ["3"] * 3 and out["boundaries"]["1|2"] is None
    assert out["recommended_plr"] == 2e-3
    assert "no PLR of the sweep reached regime 1" in out["reason"] and "1|2 boundary is not known" in out["reason"]
    assert "just above the 1|2 boundary" not in out["reason"]
    out = label_regimes(sweep()[4:], chance=0.5)  # with scores: the best is 2A, without a boundary below it
    assert out["recommended_plr"] == 5e-3 and "just above" not in out["reason"]
    assert "reached regime 1" in out["reason"]
    assert "reached regime 1" not in label_regimes(sweep(), chance=0.5)["reason"]


def test_recommendation_in_regime_one_and_ties():
    score = list(SCORE)
    score[2] = 0.93  # a regime-1 PLR is the best: every regime-2 PLR is 2B
    out = label_regimes(sweep(score=score), chance=0.5)
    assert out["labels"] == ["1"] * 4 + ["2B"] * 5 + ["3"] * 3 and out["brackets"]["2A|2B"] is None
    assert out["recommended_plr"] == 5e-4 and "in regime 1, below the detected 1|2 boundary" in out["reason"]
    score = list(SCORE)
    score[4] = score[5]  # a tie: the lower PLR
    out = label_regimes(sweep(score=score), chance=0.5)
    assert out["labels"][4:6] == ["2A", "2A"] and out["recommended_plr"] == 2e-3


def test_fewer_seeds_use_the_fixed_tolerance_and_say_so():
    out = label_regimes(sweep(std=0.02, seeds=2), chance=0.5)
    assert out["labels"][4:9] == ["2A", "2A", "2A", "2B", "2B"]  # within 0.02 of 0.91: 0.905, 0.90
    assert "fixed tolerance" in out["two_a_test"] and "fixed tolerance" in out["range_reason"]
    assert out["range_plrs"] == [2e-3, 5e-3, 1e-2]
    assert "one seed" in label_regimes(sweep(seeds=1), chance=0.5)["reason"]
    tight = label_regimes(sweep(), chance=0.5)
    assert "standard errors" in tight["two_a_test"] and "fixed" not in tight["two_a_test"]


def test_as_good_statistics():
    se = (0.02 ** 2 / 3 + 0.02 ** 2 / 3) ** 0.5  # std 0.02 over 4 seeds each
    best = (0.90, 0.02, 4)
    assert as_good(best, (0.90 - 1.9 * se, 0.02, 4)) and not as_good(best, (0.90 - 2.1 * se, 0.02, 4))
    assert as_good(best, (0.885, 0.0, 2)) and not as_good(best, (0.875, 0.0, 2))  # 2 seeds: within 0.02
    assert as_good(best, (0.875, 0.0, 2), Rule(tolerance=0.03))


@pytest.mark.parametrize("i, loss, acc", [
    (6, 1e-4, 1.0),    # a converging-looking PLR inside regime 2
    (6, 0.2, 0.52),    # a chance-level PLR inside regime 2
    (1, 0.2, 0.95),    # a chaotic-looking PLR inside regime 1
    (10, 0.2, 0.9),    # a trainable PLR inside regime 3
])
def test_noisy_plr_is_cleaned(i, loss, acc):
    losses, accs = list(LOSS), list(ACC)
    losses[i], accs[i] = loss, acc
    out = label_regimes(sweep(losses, accs, score=None), chance=0.5)
    assert out["raw_labels"] != CLEAN and out["labels"] == CLEAN and out["relabelled"] == [PLRS[i]]
    assert out["brackets"] == {"1|2": [1e-3, 2e-3], "2A|2B": None, "2|3": [5e-2, 0.1]}


def test_no_regime_two_or_three_and_nothing_learned():
    keep = [0, 1, 2, 3, 9, 10, 11]
    out = label_regimes([sweep(score=None)[i] for i in keep], chance=0.5)
    assert out["labels"] == ["1"] * 4 + ["3"] * 3
    assert out["brackets"]["1|2"] == out["brackets"]["2|3"] == [1e-3, 0.1]  # regime 2 narrower than the grid
    assert out["recommended_plr"] == 1e-3 and "extend the sweep upwards" in out["reason"]
    out = label_regimes(sweep()[:9], chance=0.5)
    assert out["boundaries"]["2|3"] is None and out["recommended_plr"] == 5e-3
    out = label_regimes(sweep()[9:], chance=0.5)
    assert out["labels"] == ["3"] * 3 and out["recommended_plr"] is None and "smaller PLRs" in out["reason"]
    assert all(v is None for v in out["boundaries"].values())


def test_divergence_is_relative_to_chance():
    # CIFAR-10: chance 0.1, learned above 0.1 + 0.1 x 0.9 = 0.19
    plrs, loss, acc = [1e-3, 1e-2, 0.1, 1.0], [1e-3, 0.5, 2.0, float("nan")], [1.0, 0.85, 0.25, 0.1]
    labels = lambda: label_regimes([PLRResult(*x) for x in zip(plrs, loss, acc)], chance=0.1)["labels"]  # noqa
    assert labels() == ["1", "2", "2", "3"]
    acc[2] = 0.1 + RULE.div_tol * 0.9 - 1e-9
    assert labels() == ["1", "2", "3", "3"]
    loss[2], acc[2] = float("inf"), 0.5  # a non-finite loss: not learned, whatever the accuracy
    assert labels() == ["1", "2", "3", "3"]


def test_still_decreasing_curve_is_regime_one():
    steps = np.arange(20000, 40001, 500)
    falling = [(int(s), 0.05 * (40000 / s) ** 3) for s in steps]  # ~0.4 -> 0.05 over the last half
    rng = np.random.default_rng(0)
    flat = [(int(s), 0.05 * (1 + 0.3 * rng.standard_normal())) for s in steps]  # noisy, stationary
    assert still_decreasing(falling) and not still_decreasing(flat)
    losses, curves = list(LOSS), [None] * 12
    losses[4], curves[4] = falling[-1][1], falling  # 0.05 > loss_tol, but still falling
    out = label_regimes(sweep(losses, score=None, curves=curves), chance=0.5)
    assert out["labels"] == ["1"] * 5 + ["2"] * 4 + ["3"] * 3 and out["brackets"]["1|2"] == [2e-3, 5e-3]
    curves[4] = flat
    assert label_regimes(sweep(losses, score=None, curves=curves), chance=0.5)["labels"] == CLEAN


def test_still_decreasing_edge_cases():
    assert not still_decreasing(None) and not still_decreasing([]) and not still_decreasing([(1, 0.3)])
    assert not still_decreasing([(1, 0.5), (2, None)])
    assert still_decreasing([(2, 0.1), (1, 0.5)])            # sorted by step; last/first = 0.2
    assert not still_decreasing([(1, 0.5), (2, 0.3)])        # 0.6 >= the decay ratio
    assert still_decreasing([(1, 0.5), (2, float("nan")), (3, 0.1)])
    assert not still_decreasing([(1, 0.0), (2, 0.0)])


def test_practical_boundary_at_the_best_pretraining_accuracy():
    plrs = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0]
    loss = [0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 2.3]  # weight decay: no convergence
    acc = [0.99, 0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.87, 0.83, 0.8, 0.72, 0.65, 0.1]
    pt = [0.90, 0.905, 0.91, 0.92, 0.935, 0.93, 0.92, 0.91, 0.90, 0.88, 0.85, 0.80, 0.1]
    s = [PLRResult(*x, pretrain_acc=p) for x, p in zip(zip(plrs, loss, acc), pt)]
    out = label_regimes(s, chance=0.1, practical=True, split="test")
    assert out["labels"] == ["1"] * 4 + ["2"] * 8 + ["3"]
    assert out["boundaries"]["1|2"] == 2e-3 and out["brackets"]["1|2"] == [2e-3, 2e-3]
    assert out["brackets"]["2|3"] == [0.5, 1.0] and out["recommended_plr"] == 2e-3
    assert out["rule"].splitlines()[1].startswith("Practical setting") and "pre-training test accuracy" in out["rule"]
    # the non-practical rule would call all of these regime 2 (losses above loss_tol)
    assert label_regimes([PLRResult(*x) for x in zip(plrs, loss, acc)], chance=0.1)["labels"][:4] == ["2"] * 4
    with pytest.raises(ValueError, match="pretrain_acc"):
        label_regimes([PLRResult(*x) for x in zip(plrs, loss, acc)], chance=0.1, practical=True)


def test_synthetic_grid_brackets():
    """Numbers shaped like the synthetic sweep of docs/protocol.md section 7 give its boundaries."""
    plrs = list(np.logspace(-4.5, -2.25, 10)[:-1]) + list(np.logspace(-2.25, -1.25, 9)[:-1]) \
        + list(np.logspace(-1.25, 0, 6))
    i12, i3 = 11, 17  # 1e-2: the first PLR whose loss does not converge; 5.62e-2: the first at chance
    loss = [1e-5 * 10 ** (i / 4) for i in range(i12)] + [0.05 + 0.04 * k for k in range(i3 - i12)] \
        + [0.693] * (23 - i3)
    acc = [1.0] * i12 + [0.99 - 0.05 * k for k in range(i3 - i12)] + [0.5] * (23 - i3)
    score = [0.90] * i12 + [0.93] * 3 + [0.93 - 0.03 * k for k in range(1, 4)] + [None] * (23 - i3)
    out = label_regimes([PLRResult(p, lo, a, score=None if m is None else (m, 0.004, 50))
                         for p, lo, a, m in zip(plrs, loss, acc, score)], chance=0.5)
    assert [round(x, 5) for x in out["brackets"]["1|2"]] == [0.0075, 0.01]
    assert [round(x, 4) for x in out["brackets"]["2A|2B"]] == [0.0178, 0.0237]
    assert [round(x, 4) for x in out["brackets"]["2|3"]] == [0.0422, 0.0562]
    assert out["recommended_plr"] == plrs[i12] and out["range_plrs"] == plrs[i12:i12 + 3]


def test_segment_ties_and_gaps():
    assert segment([0, 0, 1, 1, 2], 3) == [2, 4]
    assert segment([0, 0, 1, 0, 1, 1], 2) == [2]          # split 2 or 4 cost 1: the lower wins
    assert segment([None, 0, None, 1, None], 2) == [2]    # non-votes cost nothing
    assert segment([None, None], 2) == [0]
    assert segment([2, 2, 0], 3) == [0, 0]                # all regime 3 except a stray 1 at the top
    assert segment([], 3) == [0, 0]


def test_thresholds_are_a_rule_and_its_text():
    out = label_regimes(sweep(score=None), chance=0.5, rule=Rule(loss_tol=0.16))
    assert out["labels"] == ["1"] * 6 + ["2"] * 3 + ["3"] * 3 and "0.16" in out["rule"]
    out = label_regimes(sweep(std=0.0, seeds=2), chance=0.5, rule=Rule(tolerance=0.07))
    assert out["labels"][4:9] == ["2A", "2A", "2A", "2A", "2B"]
    text = RULE.text()
    assert len(text.splitlines()) >= 5 and str(RULE.loss_tol) in text and str(RULE.tolerance) in text
    assert "validation accuracy" in text and "test accuracy" in RULE.text(split="test")


def test_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        label_regimes([PLRResult(1e-3, 0.1, 0.9), PLRResult(1e-3, 0.1, 0.9)], chance=0.5)
    with pytest.raises(ValueError, match="train loss and accuracy"):
        label_regimes([PLRResult(1e-3, None, 0.9)], chance=0.5)
    with pytest.raises(ValueError, match="empty"):
        label_regimes([], chance=0.5)
    with pytest.raises(ValueError, match="chance"):
        label_regimes([PLRResult(1e-3, 0.1, 0.9)], chance=10)
