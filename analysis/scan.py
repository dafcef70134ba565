"""The adaptive scan's decisions: which initial LR, for about two training runs (scan.py runs it,
bench/scan_budget.py replays it on a finished sweep). Pure functions on training curves.

The answer sits just above the 1|2 boundary (docs/protocol.md section 1), and a constant-LR run's
first steps are those of any longer run. So every PLR of the grid starts with a short run, and only
the PLRs whose regime is still undecided are extended (their length doubled, successive-halving
style), the ones that bracket the 1|2 boundary first:

    plan = Scan(plrs, full=40000, first=2500, budget=2 * 60000, chance=0.5)
    while (todo := plan.step(curves)) is not None:      # {plr: length to train it to}; curves: {plr:
                                                        # (curve, final train acc, length trained)}
        ... train each PLR of todo to its length ...
    plan.pick, plan.bracket, plan.stopped_because        # the smallest regime-2 PLR, or None: inconclusive

A PLR's regime is decided by a test on its own curve (`classify`, with scipy.stats):
- at chance: its final train accuracy at most chance + DIV_TOL x (1 - chance); divergent (regime 3)
  above a PLR that learned, too small to move yet (regime 1, not converged; never the pick) below
  every PLR that learned;
- converged: its train loss below LOSS_TOL: regime 1;
- falling: over the last half of the curve the Theil-Sen slope of the log loss (scipy.stats.theilslopes)
  has its whole 95 % interval below 0, and the fitted loss falls at least by DECAY_RATIO over that
  half: regime 1 (the sweep's rule calls such a loss still falling: docs/protocol.md section 1);
- stationary: the fitted change over that half is within STATIONARY of none, and the slope is not
  significantly negative (its interval reaches 0 or above), at a loss of at least LOSS_TOL: regime 2
  (chaotic equilibrium); a loss that keeps falling, however slowly, is left undecided. Near the 1|2
  boundary a loss can hover for thousands of steps and then converge (the synthetic example at ELR
  5.62e-3 does in its first 8,000 of 40,000 iterations), so the smallest regime-2 PLR, the top of the
  bracket, counts only once its run is CONFIRM of the full length; until then it is extended;
- otherwise undecided; at the full pre-training length the sweep's own rule decides.
Monotonicity in the PLR then decides the neighbours of a decided PLR without training them: below a
regime-1 PLR everything is regime 1, above a regime-2 PLR everything that learned is regime 2. Verdicts
that contradict it (a regime-1 verdict above a regime-2 one) are first set aside: the 1|2 split that
contradicts the fewest is kept, and the verdicts on its wrong side count as undecided.

Off the sphere (`--sphere off`: momentum and weight decay, where a training loss need not converge)
the sweep takes the 1|2 boundary at the PLR with the best pre-training validation accuracy (the
practical rule, docs/protocol.md section 6), and so does the scan (`Halving`): after the first
runs, the PLRs that learned are ranked by their mean validation accuracy over the last quarter of
their runs, the better half is continued to twice the length, and so on until one is left: the pick.
"""
import math
from collections import defaultdict

import numpy as np
from scipy import stats

from analysis.regimes import RULE, still_decreasing
from analysis.sweep import key

SCAN_SETS = ("--lr", "--out", "--epochs", "--iters", "--eval_every", "--keep_snapshots",  # train.py flags the
             "--save_epochs")                                                   # scan sets (none kept)
CONFIRM = 0.25      # a stationary verdict bounds the bracket once its run is this share of the full length
MIN_POINTS = 6      # evaluation points a test needs in the last half of a curve
STATIONARY = 0.25   # stationary: the fitted loss changes by less than this fraction over the half
ALPHA = 0.95        # the confidence of the slope's interval


def classify(curve, acc, chance, full=False, rule=RULE):
    """(verdict, reason) of one PLR from its curve [(step, train loss), ...] at evaluation points and
    its final train accuracy: verdict "chance", "1", "2" or None (undecided); full: the curve reaches
    the full pre-training length, where the sweep's rule decides."""
    pts = sorted((float(s), float(v)) for s, v in curve if v is not None and math.isfinite(float(v)))
    if not pts or not math.isfinite(float(acc)) or float(acc) <= chance + rule.div_tol * (1 - chance):
        return "chance", "at chance"
    if pts[-1][1] < rule.loss_tol:
        return "1", "converged"
    half = [(s, v) for s, v in pts if s >= pts[-1][0] / 2]
    if full:
        return ("1", "still falling at full length") if still_decreasing(half, rule.decay_ratio, rule.curve_window) \
            else ("2", "not falling at full length")
    if len(half) < MIN_POINTS or min(v for _, v in half) <= 0:
        return None, f"fewer than {MIN_POINTS} points in the last half"
    s, v = np.array([p[0] for p in half]), np.log([p[1] for p in half])
    slope, _, lo, hi = stats.theilslopes(v, s, alpha=ALPHA)
    change = math.exp(slope * (s[-1] - s[0]))  # the fitted loss at the end over the one at the start
    if hi < 0 and change < rule.decay_ratio:
        return "1", f"falling (x{change:.2f} over the last half)"
    if hi >= 0 and abs(change - 1) < STATIONARY:  # flat, and not significantly falling
        return "2", f"stationary (x{change:.2f} over the last half)"
    return None, f"undecided (x{change:.2f} over the last half, slope interval [{lo:.3g}, {hi:.3g}])"


class Scan:
    """The plan of one adaptive scan over a PLR grid (module docstring): the curve tests, on the sphere.

    plrs: increasing; full: the full pre-training length (the backend's unit); first: the first
    runs' length; budget: the most it may train, in that unit, over all PLRs (lengths count once per
    PLR: a run continued to twice its length costs the new half only); chance: the accuracy of a
    constant prediction; run_length: one pre-training + fine-tuning run, the unit costs are given in.
    """

    reads = ("train", "loss")  # the curves it takes (split, field of metrics.jsonl): the training loss

    def __init__(self, plrs, full, first, budget, chance, run_length, rule=RULE, per_round=2):
        self.plrs, self.full, self.first, self.budget, self.chance = list(plrs), full, first, budget, chance
        self.run_length, self.rule, self.per_round = run_length, rule, per_round
        self.length = {p: 0 for p in self.plrs}       # what each PLR has been trained to
        self.verdicts = {p: (None, "not run") for p in self.plrs}
        self.regime = {p: None for p in self.plrs}    # after monotonicity
        self.decided_by = {p: None for p in self.plrs}
        self.provisional = {p: False for p in self.plrs}  # stationary in a run too short to confirm it
        self.pick = self.bracket = self.stopped_because = None
        self.needed = None  # the budget (runs) that would decide an inconclusive scan

    @property
    def spent(self):
        return sum(self.length.values())

    def step(self, curves):
        """The next lengths to train ({plr: length}), given each PLR's curve so far ({plr: (curve [(step,
        train loss)], final train acc, the length it has been trained to)}); None when the scan has
        stopped."""
        if curves is None:
            return self._first_runs()
        for p in self.plrs:
            curve, acc, self.length[p] = curves[p]
            self.verdicts[p] = classify(curve, acc, self.chance, self.length[p] >= self.full, self.rule)
            self.provisional[p] = self.verdicts[p][0] == "2" and self.length[p] < CONFIRM * self.full
        self._decide()
        lo, hi = self._bracket()
        n, r = len(self.plrs), [self.regime[p] for p in self.plrs]
        firm = hi is None or not self.provisional[self.plrs[hi]]  # the bracket's top: confirmed at length
        if lo is not None and hi == lo + 1 and firm:
            return self._stop("the bracket is decided", lo, hi, decided=True)
        if hi == 0 and firm:
            return self._stop("every PLR that learned is regime 2: the 1|2 boundary lies below the grid (extend it "
                              "to smaller PLRs)", lo, hi)
        if hi is None and lo is not None and (lo == n - 1 or r[lo + 1] == "3"):
            return self._stop("no PLR reaches regime 2: it lies above the grid or between the largest regime-1 PLR "
                              "and the first divergent one (refine the grid there)", lo, hi)
        start = (lo if lo is not None else -1) + 1  # the bracket: up to the smallest regime-2 PLR, or divergent one
        stop = hi if hi is not None else next((i for i in range(start, n) if r[i] == "3"), n)
        open_ = [i for i in range(start, stop) if r[i] is None] + ([] if firm else [hi])
        if not open_:
            return self._stop("no undecided PLR is left between the regimes", lo, hi)
        # the undecided PLRs nearest the middle of the bracket: deciding one decides its side
        centre = (start + stop - 1) / 2
        chosen = sorted(open_, key=lambda i: (abs(i - centre), i))[:self.per_round]
        todo = {self.plrs[i]: min(self.full, 2 * self.length[self.plrs[i]]) for i in chosen}
        extra = sum(todo[p] - self.length[p] for p in todo)
        if self.spent + extra > self.budget:
            self.needed = self._to_decide(open_)
            return self._stop("the budget is spent", lo, hi)
        return todo

    def _first_runs(self):
        """Every PLR starts with a short run, if the budget allows."""
        first = min(self.first, self.full)
        if first * len(self.plrs) > self.budget:
            self.stopped_because = "the budget is smaller than every PLR's first short run"
            return None
        return {p: first for p in self.plrs}

    def _consistent(self):
        """The verdicts, with those that contradict monotonicity set aside (None): the 1|2 split that
        contradicts the fewest verdicts is found, and every verdict on the wrong side of a best split is
        undecided again (e.g. a chaotic loss caught falling after a spike, above stationary PLRs)."""
        v = [self.verdicts[p][0] for p in self.plrs]
        wrong = [[i for i, x in enumerate(v) if (x == "2" and i < b) or (x == "1" and i >= b)]
                 for b in range(len(v) + 1)]
        fewest = min(map(len, wrong))
        bad = {i for w in wrong if len(w) == fewest for i in w}
        return [None if i in bad else x for i, x in enumerate(v)], bad

    def _decide(self):
        """Regimes from the verdicts, with monotonicity: at chance above a PLR that learned -> 3, below
        every one -> 1 (too small to move); verdicts that contradict each other set aside; below a
        regime-1 PLR -> 1; above a regime-2 one -> 2."""
        v, bad = self._consistent()
        learned = [i for i, x in enumerate(v) if x != "chance"]
        top1 = max((i for i, x in enumerate(v) if x == "1"), default=-1)
        low2 = min((i for i, x in enumerate(v) if x == "2"), default=len(v))
        for i, p in enumerate(self.plrs):
            if v[i] == "chance":
                self.regime[p], self.decided_by[p] = at_chance(i, learned)
            elif v[i] is not None:
                self.regime[p], self.decided_by[p] = v[i], self.verdicts[p][1]
                if self.provisional[p]:
                    self.decided_by[p] += f" in {self.length[p]:g}, short of the {CONFIRM * self.full:g} that confirm it"
            else:
                self.regime[p], self.decided_by[p] = ("1", f"below the regime-1 PLR {self.plrs[top1]:g}") if i < top1 \
                    else ("2", f"above the regime-2 PLR {self.plrs[low2]:g}") if i > low2 else (None, self.verdicts[p][1])
                if i in bad:
                    self.decided_by[p] += f" (its own verdict, {self.verdicts[p][1]}, contradicts its neighbours')"

    def _bracket(self):
        """(index of the largest regime-1 PLR or None, index of the smallest regime-2 PLR or None)."""
        r = [self.regime[p] for p in self.plrs]
        lo = max((i for i, x in enumerate(r) if x == "1"), default=None)
        hi = min((i for i, x in enumerate(r) if x == "2" and (lo is None or i > lo)), default=None)
        return lo, hi

    def _to_decide(self, open_):
        """Runs it would take to decide: every open PLR trained to the full length."""
        return (self.spent + sum(self.full - self.length[self.plrs[i]] for i in open_)) / self.run_length

    def _stop(self, why, lo, hi, decided=False):
        """Stop: the pick is the smallest regime-2 PLR when the bracket is decided, else None (inconclusive:
        the grid's edge is never an answer)."""
        self.stopped_because = why
        self.bracket = [self.plrs[lo] if lo is not None else None, self.plrs[hi] if hi is not None else None]
        self.pick = self.plrs[hi] if decided else None
        return None

    def summary(self):
        """summary.json's "scan": the pick, the bracket, the cost in runs, why it stopped, per PLR."""
        return {"reads": " ".join(self.reads), "pick": self.pick, "bracket": self.bracket,
                "cost_runs": self.spent / self.run_length,
                "budget_runs": self.budget / self.run_length, "stopped_because": self.stopped_because,
                "runs_to_decide": self.needed,
                "per_plr": [{"plr": p, "regime": self.regime[p], "steps": self.length[p],
                             "decided_by": self.decided_by[p]} for p in self.plrs]}


class Halving(Scan):
    """The scan off the sphere (module docstring): successive halving on validation accuracy, the
    sweep's practical rule. `step` takes each PLR's held-out accuracy curve [(step, acc)]: validation
    accuracy, or where the run has no validation split its test accuracy (what the sweep's rule reads
    then; summary.json's "selection" says which)."""

    reads = ("val", "acc")  # where a run has no validation split: ("test", "acc"), as the sweep's rule

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.alive = list(self.plrs)  # the PLRs still in the race, all trained to the same length

    def step(self, curves):
        if curves is None:
            return self._first_runs()
        score = {}
        for p in self.plrs:
            curve, acc, self.length[p] = curves[p]
            learned = math.isfinite(float(acc)) and float(acc) > self.chance + self.rule.div_tol * (1 - self.chance)
            if p in self.alive and not learned:
                self.alive.remove(p)
                self.verdicts[p] = ("chance", "at chance")
            elif p in self.alive:
                score[p] = late_mean(curve)
        if not self.alive:
            return self._settle("no PLR learned")
        length = self.length[self.alive[0]]
        ranked = sorted(self.alive, key=lambda p: (-score[p], p))  # ties: the lower PLR
        keep = ranked[:max(1, -(-len(ranked) // 2))]
        for rank, p in enumerate(ranked, 1):
            self.verdicts[p] = (None, f"held-out accuracy {score[p]:.1%} at {length:g}, rank {rank} of {len(ranked)}")
        if length >= self.full:  # no longer runs: the best of those left
            keep = ranked[:1]
        if len(keep) == 1:
            self.alive = keep
            self.verdicts[keep[0]] = ("pick", f"the best held-out accuracy, {score[keep[0]]:.1%} at {length:g}" + (
                f" (against {score[ranked[1]]:.1%} of {ranked[1]:g})" if len(ranked) > 1 else ""))
            return self._settle("one PLR is left: the best held-out accuracy", decided=True)
        todo = {p: min(self.full, 2 * length) for p in keep}
        self.alive = keep
        if self.spent + sum(todo[p] - length for p in keep) > self.budget:
            return self._settle("the budget is spent")
        return todo

    def _settle(self, why, decided=False):
        """Regimes by the practical rule around the PLRs still in the race (below them 1, above them 2),
        then stop: the pick when one is left, else inconclusive with the runs the race still needs."""
        lo, hi = (min(self.alive), max(self.alive)) if self.alive else (None, None)
        learned = [i for i, p in enumerate(self.plrs) if self.verdicts[p][0] != "chance"]
        for i, p in enumerate(self.plrs):
            v, why_p = self.verdicts[p]
            if v == "chance":
                self.regime[p], self.decided_by[p] = at_chance(i, learned)
            else:
                self.regime[p] = "1" if p < lo else "2" if p > hi or decided else None
                self.decided_by[p] = why_p if v == "pick" or p in self.alive else f"eliminated: {why_p}"
        if not decided and self.alive:
            length, n, need = self.length[self.alive[0]], len(self.alive), 0
            while n > 1 and length < self.full:  # the rounds the race still needs: extend, then halve
                nxt = min(self.full, 2 * length)
                need, length = need + n * (nxt - length), nxt
                n = -(-n // 2) if length < self.full else 1
            self.needed = (self.spent + need) / self.run_length
        index = lambda p: None if p is None else self.plrs.index(p)  # noqa: E731
        return self._stop(why, index(lo), index(hi), decided)


def at_chance(i, learned):
    """(regime, reason) of the i-th PLR of a grid, at chance; learned: the indices of those that learned."""
    if learned and i < learned[0]:
        return "1", "at chance below every PLR that learned: too small to move yet"
    return "3", "at chance above a PLR that learned" if learned else "at chance"


def late_mean(curve):
    """The mean of a curve [(step, value)] over the last quarter of its steps."""
    pts = sorted((float(s), float(v)) for s, v in curve if v is not None and math.isfinite(float(v)))
    if not pts:
        return float("-inf")
    late = [v for s, v in pts if s >= 0.75 * pts[-1][0]]
    return sum(late) / len(late)


def plan_for(practical):
    """The scan's plan: the curve tests, or successive halving where the sweep labels by the practical
    rule (off the sphere: analysis/sweep.practical)."""
    return Halving if practical else Scan


def first_length(full, unit):
    """Every PLR's first run: a 32nd of the full pre-training, at least 4 epochs."""
    return max(-(-full // 32), 4 if unit == "epochs" else 1)


def curve_of(rows, at, length, reads):
    """A run's curve for the plan [(step, value)] and final train accuracy, from its metrics.jsonl
    rows up to `length` (`at`: "epoch" or "step"): `reads` (split, field) is the plan's; validation
    rows fall back to test rows for a run without a validation split."""
    rows = [r for r in rows if not r.get("swa") and r[at] <= length]
    split, field = reads
    if split == "val" and not any(r["split"] == "val" for r in rows):
        split = "test"
    train = [r for r in rows if r["split"] == "train"]
    return [(r[at], r[field]) for r in rows if r["split"] == split], (train[-1]["acc"] if train else float("nan"))


class Replay:
    """One seed's pre-training rows from finished runs: its curve at any length up to theirs."""

    def __init__(self, run_dirs, unit):
        self.rows = defaultdict(list)  # plr -> its rows, in order
        for rd in run_dirs:
            members = {m["member"]: m for m in rd.members() if (m["seed"], m.get("data_seed")) == unit}
            for r in rd.metrics():
                if r["member"] in members and not r.get("swa"):
                    self.rows[key(members[r["member"]]["plr"])].append(r)
        self.at = "epoch" if any("epoch" in r for rows in self.rows.values() for r in rows) else "step"
        self.longest = {p: max(r[self.at] for r in rows) for p, rows in self.rows.items()}

    def curve(self, plr, length, reads=Scan.reads):
        if length > self.longest[plr]:
            raise ValueError(f"the runs of PLR {plr:g} are {self.longest[plr]} {self.at}s long; the scan asks for "
                            f"{length}")
        return (*curve_of(self.rows[plr], self.at, length, reads), length)


def replay(replay, plrs, full, run_length, budget, chance, practical=False):
    """The adaptive scan of one seed at `budget` runs, on finished runs' rows (`Replay`): the plan (its
    pick, cost ...), as scan.py would have run it on those runs' first steps (`practical`: plan_for's)."""
    plan = plan_for(practical)(plrs, full, first_length(full, replay.at + "s"), budget * run_length, chance, run_length)
    todo = plan.step(None)
    while todo is not None:
        todo = plan.step({p: replay.curve(p, todo.get(p) or plan.length[p], plan.reads) for p in plrs})
    return plan
