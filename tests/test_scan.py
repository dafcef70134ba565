"""The adaptive scan (analysis/scan.py, scan.py): the regime test on constructed curves, the plan of
extensions on a constructed grid (it spends where the boundary is, stops when the bracket is decided,
keeps to its budget, never names the grid's edge), successive halving off the sphere, its report, and a
real scan stopped and started again."""
import json
import math
import signal

import numpy as np
import pytest

from analysis.scan import Halving, Scan, classify, late_mean, plan_for
from conftest import call, interrupt_at, run

STEPS = list(range(0, 4001, 100))


def curve(loss, steps=STEPS):
    return [(s, loss(s)) for s in steps]


def noisy(level, rel, seed=0):
    rng = np.random.default_rng(seed)
    return lambda s: level * math.exp(rel * rng.standard_normal())


def test_the_regime_test_on_constructed_curves():
    # a loss that converges: regime 1 as soon as it is below the tolerance
    assert classify(curve(lambda s: 0.5 * math.exp(-s / 300)), 1.0, 0.5) == ("1", "converged")
    # converging slowly (a power law, still above the tolerance): falling by more than 2x over the last half
    v, why = classify(curve(lambda s: 0.9 * (1 + s / 100) ** -1.2), 0.97, 0.5)
    assert v == "1" and why.startswith("falling")
    # stationary and chaotic (5 % noise around 0.3): regime 2
    v, why = classify(curve(noisy(0.3, 0.05)), 0.9, 0.5)
    assert v == "2" and why.startswith("stationary")
    # very noisy (60 %) and drifting: neither test is sure
    drift = noisy(0.3, 0.6, seed=3)
    assert classify(curve(lambda s: drift(s) * (1 + s / 4000) ** -0.7), 0.9, 0.5)[0] is None
    # falling, but by less than 2x over the half: undecided, until the full length decides by the sweep's rule
    slow = curve(lambda s: 0.5 * (1 + s / 1000) ** -0.3)
    assert classify(slow, 0.9, 0.5)[0] is None
    assert classify(slow, 0.9, 0.5, full=True) == ("2", "not falling at full length")
    # at chance: for the plan to place (divergent above a PLR that learned, too small to move below)
    assert classify(curve(lambda s: 0.69), 0.52, 0.5) == ("chance", "at chance")
    assert classify(curve(lambda s: float("nan")), 0.9, 0.5)[0] == "chance"
    # too few points in the last half of a short run: undecided
    assert classify(curve(noisy(0.3, 0.05), [0, 100, 200, 300]), 0.9, 0.5)[0] is None


PLRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]  # regime 1 up to 3e-3, 2 from 1e-2, 3 from 0.3


def world(plr, length):
    """A PLR's training curve up to `length` (evaluated every `length` / 16 steps, like scan.py's first runs):
    the regimes of PLRS, where 3e-3 converges slowly (0.5 exp(-s / 1500): hardly falling in a first run of
    200 steps, by 3x over the last half of 3200) and 1e-2 settles in about 800 steps."""
    every = max(1, length // 16)
    steps = list(range(0, length + 1, every))
    noise = lambda s: math.exp(0.05 * np.random.default_rng([int(plr * 1e6), s]).standard_normal())  # noqa: E731
    if plr >= 0.3:
        return curve(lambda s: 0.69 * noise(s), steps), 0.5, length
    if plr >= 1e-2:
        settle = 200 if plr == 1e-2 else 50
        return curve(lambda s: 0.3 * (1 + 3 * math.exp(-s / settle)) * noise(s), steps), 0.9, length
    if plr == 3e-3:
        return curve(lambda s: 0.5 * math.exp(-s / 1500), steps), 0.95, length
    return curve(lambda s: 0.5 * math.exp(-s / (50 * 1e-3 / plr)), steps), 1.0, length


def drive(plan, world):
    """Run a plan on a constructed world (plr, length) -> (curve, final train acc, length) as scan.py
    would on real runs: (the plan, the lengths it asked for, round by round)."""
    todo, rounds = plan.step(None), []
    while todo is not None:
        rounds.append(todo)
        todo = plan.step({p: world(p, todo.get(p) or plan.length[p]) for p in plan.plrs})
    return plan, rounds


def run_plan(budget, first=200, full=6400, run_length=9600):
    return drive(Scan(PLRS, full, first, budget * run_length, 0.5, run_length), world)


def test_the_plan_spends_where_the_boundary_is_and_stops_when_it_is_decided():
    plan, rounds = run_plan(budget=4)
    assert rounds[0] == {p: 200 for p in PLRS}  # every PLR's short run
    extended = {p for r in rounds[1:] for p in r}
    assert extended <= {3e-3, 1e-2, 3e-2}  # none decided by its first run: only the bracket's are continued
    assert plan.stopped_because == "the bracket is decided" and plan.bracket == [3e-3, 1e-2] and plan.pick == 1e-2
    s = plan.summary()
    regimes = {e["plr"]: e["regime"] for e in s["per_plr"]}
    assert [regimes[p] for p in PLRS] == ["1"] * 4 + ["2"] * 3 + ["3"] * 2
    steps = {e["plr"]: e["steps"] for e in s["per_plr"]}
    assert steps[3e-3] == max(steps.values()) == 3200 and steps[1e-4] == steps[0.1] == 200  # the slow one, longest
    assert {e["plr"]: e["decided_by"] for e in s["per_plr"]}[3e-3].startswith("falling")
    assert s["cost_runs"] == pytest.approx(plan.spent / 9600) and plan.spent < 9600


@pytest.mark.parametrize("budget, decided", [(0.1, False), (0.3, False), (1, True), (4, True)])
def test_the_budget_is_kept(budget, decided):
    plan, _ = run_plan(budget)
    assert plan.spent <= budget * 9600
    assert (plan.pick == 1e-2) if decided else (plan.pick is None)
    if not decided:  # stopped short: inconclusive, with what it found and what it would take
        assert plan.stopped_because in ("the budget is spent", "the budget is smaller than every PLR's first short run")
        if plan.stopped_because == "the budget is spent":
            assert plan.bracket[0] in (1e-3, 3e-3) and plan.bracket[1] in (1e-2, None)
            assert budget < plan.summary()["runs_to_decide"] <= 2  # (every open PLR to the full length)


def test_the_grid_edge_is_never_the_answer():
    plan, _ = drive(Scan(PLRS[4:], 6400, 200, 4 * 9600, 0.5, 9600), world)  # the grid starts inside regime 2
    assert plan.pick is None and "below the grid" in plan.stopped_because


SCAN = ["--plrs", "1e-4", "1e-3", "5.62e-3", "7.5e-3", "1e-2", "0.1", "1", "--full", "4000", "--finetune", "2000"]
TICK = ["--", "--dataset", "tick", "--model", "mlp_si", "--seed", "3", "--data_seed", "3"]


@pytest.mark.parametrize("budget, message", [("0", "--budget 0.0: give a positive number of runs"),
                                             ("0.05", "every PLR's first run of 125 iters costs 0.15 runs")])
def test_bad_budgets_are_one_line(budget, message, tmp_path):
    proc = call("scan.py", *SCAN, "--budget", budget, "--out", tmp_path / "scan", *TICK, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "scan").exists()


@pytest.mark.e2e
def test_a_scan_stopped_and_started_again_picks_the_same_and_repeats_no_step(tmp_path):
    ref = run("scan.py", *SCAN, "--budget", "2", "--out", tmp_path / "ref", *TICK)
    assert "scan: PLR" in ref.stdout or "inconclusive" in ref.stdout
    code, out = interrupt_at("scan.py", *SCAN, "--budget", "2", "--out", tmp_path / "cut", *TICK, "--threads", "1",
                             sig=signal.SIGTERM, moment=r"  PLR 0.00562: to 250")
    assert code == 143, out[-2000:]
    again = run("scan.py", *SCAN, "--budget", "2", "--out", tmp_path / "cut", *TICK)
    a, b = (json.load(open(tmp_path / d / "scan.json")) for d in ("ref", "cut"))
    assert a == b  # the same decisions, the same pick, the same cost
    for e in a["per_plr"]:  # every run: each step evaluated once, the same rows as the uninterrupted scan
        name = a["runs"][str(e["plr"])] if str(e["plr"]) in a["runs"] else a["runs"][e["plr"]]
        rows = [json.loads(line) for line in open(tmp_path / "cut" / "pretrain" / name / "metrics.jsonl")]
        steps = [(r["step"], r["split"]) for r in rows]
        assert len(steps) == len(set(steps))
        assert rows == [json.loads(line) for line in open(tmp_path / "ref" / "pretrain" / name / "metrics.jsonl")]
    assert "spent" in again.stdout


@pytest.mark.e2e
def test_run_all_scan_reports_its_answer(tmp_path):
    """A scan whose budget ran out says so and what to do; doing it (the same command, a larger budget)
    continues its runs (their rows so far are the new runs' first rows) and answers."""
    cut = run("bash", "run_all.sh", "--preset", "scan", "--seeds", "3", "--budget", "0.6", "--out", tmp_path)
    folder = tmp_path / "synthetic" / "scan_s3"
    assert "inconclusive" in cut.stdout
    assert "What to do: rerun the same command with a larger --budget" in (folder / "report.md").read_text()
    before = {d.name: (d / "metrics.jsonl").read_text() for d in (folder / "pretrain").iterdir()}
    proc = run("bash", "run_all.sh", "--preset", "scan", "--seeds", "3", "--budget", "1", "--out", tmp_path)
    for name, rows in before.items():
        after = (folder / "pretrain" / name / "metrics.jsonl").read_text()
        assert after.startswith(rows), name
        steps = [(r["step"], r["split"]) for r in map(json.loads, after.splitlines())]
        assert len(steps) == len(set(steps)), name
    summary = json.load(open(tmp_path / "synthetic" / "scan_s3" / "summary.json"))
    scan = summary["scan"]
    assert set(scan) >= {"pick", "bracket", "cost_runs", "stopped_because", "per_plr"}
    assert scan["cost_runs"] <= 1 and [e["plr"] for e in scan["per_plr"]] == summary["plrs"]
    assert summary["recommended_plr"] == scan["pick"] and "scan" in proc.stdout
    assert "nan" not in proc.stdout  # no fine-tuning or SWA in a scan: its table shows "-" there
    report = (tmp_path / "synthetic" / "scan_s3" / "report.md").read_text()
    if scan["pick"] is None:
        assert "**Recommended initial (pre-training) LR: inconclusive**" in report and "What to do" in report
    else:
        assert f"**Recommended initial (pre-training) LR: {scan['pick']:.3g}**" in report and "How sure" in report


def test_verdicts_that_contradict_monotonicity_are_set_aside():
    """A chaotic loss caught falling after a spike (a regime-1 verdict above stationary regime-2 PLRs, as
    a real synthetic scan met it) neither makes its neighbours regime 1 nor is the pick: the split that
    contradicts the fewest verdicts wins, and the PLRs between the regimes are still extended."""
    plrs = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3]
    plan = Scan(plrs, 6400, 200, 4 * 9600, 0.5, 9600)
    conv = curve(lambda s: 0.5 * math.exp(-s / 20), range(0, 201, 12))
    flat, undecided = curve(noisy(0.3, 0.05), range(0, 201, 12)), curve(lambda s: 0.5 * (1 + s / 1000) ** -0.3,
                                                                          range(0, 201, 12))
    falling = curve(lambda s: 2.0 * math.exp(-s / 60), range(0, 201, 12))  # after a spike, above the tolerance
    assert classify(falling, 0.9, 0.5)[0] == "1" and classify(undecided, 0.9, 0.5)[0] is None
    todo = plan.step({1e-4: (conv, 1.0, 200), 1e-3: (conv, 1.0, 200), 3e-3: (undecided, 0.9, 200),
                      1e-2: (flat, 0.9, 200), 3e-2: (flat, 0.9, 200), 0.1: (falling, 0.9, 200),
                      0.3: (curve(lambda s: 0.69), 0.5, 200)})
    regimes = [plan.regime[p] for p in plrs]
    assert regimes == ["1", "1", None, "2", "2", "2", "3"]
    assert "contradicts its neighbours" in plan.decided_by[0.1] and plan.bracket is None
    assert todo == {3e-3: 400, 1e-2: 400}  # the PLR between the regimes, and the bracket's top (to confirm it)
    # two verdicts that contradict each other equally: both are undecided again
    plan = Scan(plrs[:4], 6400, 200, 4 * 9600, 0.5, 9600)
    plan.step({1e-4: (conv, 1.0, 200), 1e-3: (flat, 0.9, 200), 3e-3: (falling, 0.9, 200), 1e-2: (flat, 0.9, 200)})
    assert [plan.regime[p] for p in plrs[:4]] == ["1", None, None, "2"]


def test_a_loss_that_hovers_then_converges_is_not_the_pick():
    """Near the 1|2 boundary a loss can hover like an equilibrium and converge later (the synthetic example
    at 5.62e-3 in its first 8,000 iterations): stationary in a short run, it is extended until its run is a
    quarter of the full length before it may bound the bracket."""
    def hovering(plr, length):
        if plr != 3e-3:
            return world(plr, length)
        every = max(1, length // 16)
        hover = noisy(0.3, 0.05)
        loss = lambda s: hover(s) if s < 1000 else 0.3 * math.exp(-(s - 1000) / 50)  # noqa: E731
        return curve(loss, range(0, length + 1, every)), 1.0, length
    assert classify(hovering(3e-3, 200)[0], 1.0, 0.5)[0] == "2"  # a short run cannot tell it from equilibrium
    plan, _ = drive(Scan(PLRS, 6400, 200, 4 * 9600, 0.5, 9600), hovering)
    assert plan.pick == 1e-2 and plan.bracket == [3e-3, 1e-2]
    assert plan.length[3e-3] >= 1600 and plan.length[1e-2] >= 1600  # both seen for a quarter of the full length
    assert plan.spent <= 9600  # still under one run


# ---------------------------------------------------------------- off the sphere: successive halving

HALVE = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3]  # the best validation accuracy at 3e-3; 0.1, 0.3 diverge
CEILING = dict(zip(HALVE, [0.60, 0.70, 0.78, 0.85, 0.82, 0.75, None, None]))


def race(plr, length, every=1):
    """A PLR's validation-accuracy curve up to `length` epochs (rising to its ceiling; the smaller the PLR,
    the slower) and its final train accuracy (0.1, chance, where it diverges)."""
    top = CEILING[plr]
    if top is None:
        return curve(lambda s: 0.1, range(0, length + 1, every)), 0.1, length
    rate = 2.0 * min(plr, 3e-3) / 3e-3
    return curve(lambda s: 0.1 + (top - 0.1) * (1 - math.exp(-rate * s)), range(0, length + 1, every)), 0.99, length


def run_race(budget, full=32, first=2, run_length=40, world=race):
    return drive(Halving(HALVE, full, first, budget * run_length, 0.1, run_length), world)


def test_off_the_sphere_the_scan_halves_on_validation_accuracy():
    """The sweep's practical rule (1|2 at the best pre-training validation accuracy), found by successive
    halving: the PLRs that learned are ranked, the better half is run twice as long, until one is left."""
    assert plan_for(True) is Halving and plan_for(False) is Scan and Halving.reads == ("val", "acc")
    plan, rounds = run_race(budget=2)
    assert rounds[0] == {p: 2 for p in HALVE}
    # 6 learned: the best 3 to 4 epochs, the best 2 of those to 8, then the better one is the pick
    assert [sorted(r) for r in rounds[1:]] == [[3e-3, 1e-2, 3e-2], [3e-3, 1e-2]]  # 1e-3 learns too slowly
    assert all(set(r.values()) == {2 * 2 ** i} for i, r in enumerate(rounds[1:], 1))
    assert plan.pick == 3e-3 and plan.bracket == [3e-3, 3e-3] and plan.stopped_because.startswith("one PLR is left")
    assert plan.spent == 8 * 2 + 3 * 2 + 2 * 4 and plan.summary()["cost_runs"] == pytest.approx(30 / 40)
    s = plan.summary()
    assert s["reads"] == "val acc"
    assert [e["regime"] for e in s["per_plr"]] == ["1", "1", "1", "2", "2", "2", "3", "3"]  # the practical rule
    why = {e["plr"]: e["decided_by"] for e in s["per_plr"]}
    assert why[3e-3].startswith("the best held-out accuracy") and "against" in why[3e-3]
    assert why[1e-4].startswith("eliminated: held-out accuracy") and "rank 6 of 6" in why[1e-4]
    assert why[0.3] == "at chance above a PLR that learned"


@pytest.mark.parametrize("budget", [0.45, 0.6, 0.74])
def test_halving_keeps_its_budget_and_says_inconclusive(budget):
    plan, _ = run_race(budget)
    assert plan.spent <= budget * 40 and plan.pick is None and plan.stopped_because == "the budget is spent"
    lo, hi = plan.bracket  # the PLRs still in the race; what finishing it would cost
    assert lo <= 3e-3 <= hi and plan.summary()["runs_to_decide"] == pytest.approx(30 / 40)
    assert all(plan.regime[p] is None for p in HALVE if lo <= p <= hi)


def test_halving_decides_at_the_full_length_and_reads_late_means():
    """Runs at the full length are not doubled again: the best of those left is the pick. A score is the
    mean over the last quarter of a run (less at the mercy of one evaluation)."""
    assert late_mean([(0, 0.1), (4, 0.5), (6, 0.6), (7, 0.7), (8, 0.8)]) == pytest.approx(0.7)
    plan, rounds = run_race(budget=4, full=4)  # 2 -> 4 (the full length): the best of 3 at 4 epochs
    assert [sorted(r) for r in rounds[1:]] == [[3e-3, 1e-2, 3e-2]] and plan.pick == 3e-3
    # ties go to the lower PLR
    flat = lambda p, n: (curve(lambda s: 0.5, range(n + 1)), 0.99 if CEILING[p] else 0.1, n)  # noqa: E731
    assert run_race(budget=2, world=flat)[0].pick == 1e-4
