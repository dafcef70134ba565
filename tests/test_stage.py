"""The one stage loop (engine/stage.py) with a trainer whose every number is known: where it stops
(evaluations, checkpoints, kept units, SWA units), what it writes, SWA's running mean, a SIGTERM and
its resume, and a finished run continued to a longer length (RunDir.start, then the loop from
final.pt) against a run started with that length."""
import argparse
import os
import signal

import pytest
import torch

from engine import checkpoint
from engine.rundir import RunDir
from engine.stage import Average, Stage, run_stage


class Counting:
    """A trainer of one member whose weight after step t is t (advance adds 1 per step), recording
    every call; `stop_after`: set the stop flag after that many advance calls (a SIGTERM)."""

    unit = "step"

    def __init__(self, stop_after=None):
        self.w, self.calls, self.stop_after, self.evaluated, self.averaged = 0.0, [], stop_after, [], None

    def advance(self, done, target, stop):
        self.calls.append((done, target))
        self.w = float(target)
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            stop.set = True
        return target

    def evaluate(self, done):
        self.evaluated.append(done)
        return [{"member": 0, "step": done, "split": s, "loss": 1.0 / (1 + self.w), "acc": 0.5, "weight_norm": self.w}
                for s in ("train", "test")]

    def weights(self):
        return {"w": torch.tensor([self.w]), "n": torch.tensor([int(self.w)])}

    def set_weights(self, state):
        self.averaged, self.w = state, float(state["w"][0])

    def state(self):
        return {"state": self.weights()}

    def load(self, ckpt):
        self.w = float(ckpt["state"]["w"][0])

    def where(self):
        return ""

    def speed(self, units, seconds):
        return "", {}


META = {"model": "m", "model_args": {}, "dataset": "d", "recipe": {}, "members": [{"member": 0}]}


def same(a, b):
    """Two results.json contents agree (the training time aside)."""
    return {k: v for k, v in a.items() if k != "train_seconds"} == {k: v for k, v in b.items() if k != "train_seconds"}


def start(path, length=10):
    rd = RunDir(str(path))
    rd.start(argparse.Namespace(out=str(path), iters=length), "pretrain", META["members"],
             meta={"recipe": {"schedule": "constant"}}, length="iters")
    return rd


def test_the_loop_stops_at_every_mark_and_writes_what_it_kept(tmp_path):
    rd, t = start(tmp_path / "run"), Counting()
    stage = Stage("pretrain", 10, eval_every=4, checkpoint_every=3, keep=frozenset({7}), average=frozenset({8, 10}))
    results = run_stage(rd, stage, t, META)
    # each call ends at the next evaluation (4, 8), checkpoint (3, 6, 9), kept or averaged unit (7, 8, 10)
    assert t.calls == [(0, 3), (3, 4), (4, 6), (6, 7), (7, 8), (8, 9), (9, 10)]
    assert t.evaluated == [0, 4, 8, 10, 10]  # the start, the schedule, the end, then the average
    assert [r["step"] for r in rd.metrics() if r["split"] == "test"] == [0, 4, 8, 10, 10]
    assert [bool(r.get("swa")) for r in rd.metrics() if r["split"] == "test"] == [False] * 4 + [True]
    assert float(checkpoint.load(rd.kept_ckpt("step", 7))["state"]["w"][0]) == 7.0
    assert not os.path.exists(rd.kept_ckpt("step", 8))
    final = checkpoint.load(rd.final_ckpt)
    assert final["done"] == 10 and final["kept"] == [7] and final["averaged"]
    assert float(final["state"]["w"][0]) == 9.0  # the mean of the weights at 8 and 10
    assert t.averaged["n"].tolist() == [10]  # integer tensors: the latest
    assert results["step"] == 10 and results["members"][0]["weight_norm"] == 9.0
    assert not checkpoint.exists(rd.last_ckpt)


def test_sigterm_checkpoints_exits_143_and_resumes_to_the_same_end(tmp_path):
    stage = Stage("pretrain", 10, eval_every=4, checkpoint_every=100, average=frozenset({0, 6, 10}))
    ref = run_stage(start(tmp_path / "ref"), stage, Counting(), META)
    rd, t = start(tmp_path / "cut"), Counting(stop_after=2)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as e:
            run_stage(rd, stage, t, META)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert e.value.code == 143 and t.calls == [(0, 4), (4, 6)]
    last = checkpoint.load(rd.last_ckpt)
    assert last["done"] == 6 and last["average"]["n"] == 2  # the start and step 6 averaged so far
    t2 = Counting()
    assert same(run_stage(rd, stage, t2, META), ref)
    assert t2.calls == [(6, 8), (8, 10)]  # no step repeated
    assert RunDir(str(tmp_path / "cut")).metrics() == RunDir(str(tmp_path / "ref")).metrics()


def test_a_finished_run_continued_equals_the_longer_run(tmp_path):
    stage = lambda n: Stage("pretrain", n, eval_every=2, checkpoint_every=5, keep=frozenset({n}))  # noqa: E731
    ref = run_stage(start(tmp_path / "ref", 10), stage(10), Counting(), META)
    rd = start(tmp_path / "run", 6)
    rd.write_results(run_stage(rd, stage(6), Counting(), META))
    before = rd.metrics()
    del rd  # its process ends: the lock is released
    rd = start(tmp_path / "run", 10)  # the same flags, a longer --iters: RunDir.start continues the run
    assert not rd.is_complete() and os.path.exists(tmp_path / "run" / "results_6.json")
    assert rd.config()["settings"]["iters"] == 10 and rd.config()["extended"][0]["iters"] == [6, 10]
    t = Counting()
    assert same(run_stage(rd, stage(10), t, META), ref)
    assert t.calls == [(6, 8), (8, 10)] and t.evaluated == [8, 10]  # nothing done before is redone
    assert rd.metrics()[:len(before)] == before
    assert rd.metrics() == RunDir(str(tmp_path / "ref")).metrics()


def test_a_run_is_never_shortened_nor_continued_on_a_schedule(tmp_path):
    from core.errors import UserError
    start(tmp_path / "run", 10)  # (not kept: its lock is released)
    with pytest.raises(UserError, match="never cut short"):
        start(tmp_path / "run", 5)
    RunDir(str(tmp_path / "cos")).start(argparse.Namespace(out="x", iters=10), "pretrain", [],
                                        meta={"recipe": {"schedule": "cosine"}})
    with pytest.raises(UserError, match="cosine-schedule run"):
        RunDir(str(tmp_path / "cos")).start(argparse.Namespace(out="x", iters=20), "pretrain", [],
                                            meta={"recipe": {"schedule": "cosine"}}, length="iters")
    with pytest.raises(UserError, match=r"--iters 10 there, 20 here"):  # not the length: another run
        RunDir(str(tmp_path / "cos")).start(argparse.Namespace(out="x", iters=20), "pretrain", [])


def test_average_is_the_mean_in_the_weights_dtype():
    avg, states = Average(), [{"a": torch.randn(3, 4, generator=torch.Generator().manual_seed(i)),
                               "k": torch.tensor(i)} for i in range(5)]
    for s in states:
        avg.update(s)
    out = avg.result()
    assert out["a"].dtype == torch.float32 and out["k"].item() == 4
    expected = torch.stack([s["a"].double() for s in states]).mean(0)
    assert torch.allclose(out["a"].double(), expected, rtol=0, atol=1e-7)
    again = Average()
    again.load_state_dict(avg.state_dict())
    assert torch.equal(again.result()["a"], out["a"]) and again.n == 5
