"""End to end: the scripts chained through run directories, reruns, populations, interruption."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, call, interrupt_at, run
from engine import checkpoint
from engine.rundir import RunDir


def final_state(path):
    return checkpoint.load(os.path.join(path, "checkpoints", "final.pt"))["state"]


def train(out, *extra):
    return run("train.py", "--smoke", "--threads", "1", "--out", out, *extra)



def test_population_chain(tmp_path):
    """One short chain of the population backend, in this process: train -> finetune -> swa -> the
    single-feature sets -> geometry -> report, and what each stage hands the next."""
    root = tmp_path / "synthetic"
    pt, ft, swa = (root / s / "d0" for s in ("pretrain", "finetune", "swa"))
    one = ("--threads", "1")
    call("train.py", "--smoke", "--lr", "1e-3", "1e-2", "0.3", "--seed", "0", "--data_seed", "0", *one, "--out", pt)
    call("finetune.py", "--smoke", "--from", pt, "--lr", "1e-4", "3e-3", *one, "--out", ft)
    call("swa.py", "--smoke", "--from", pt, "--n_models", "5", *one, "--out", swa)
    for d in (pt, ft, swa):
        call("eval_fourier.py", "--run", d, *one)
    call("eval_geometry.py", "--smoke", "--finetune", ft, "--swa", swa, "--low", "1e-4", "--high", "3e-3", *one,
         "--out", root / "geometry" / "d0")
    assert "summary: " in call("report.py", "--root", root).stdout
    s = json.loads((root / "summary.json").read_text())
    assert s["plrs"] == [1e-3, 1e-2, 0.3]
    assert all(e["swa"] and e["geometry"] and len(e["pretrain"]["features_sorted"]) == 16 for e in s["per_plr"])
    assert list(s["per_plr"][0]["finetune"]) == ["0.0001", "0.003"]
    # SWA averaged the parent's last 5 kept steps, and fine-tuning started where pre-training ended
    parent = checkpoint.load(RunDir(str(pt)).final_ckpt)
    assert RunDir(str(swa)).results()["swa_steps"] == parent["kept"] == [160, 170, 180, 190, 200]
    first = [r for r in RunDir(str(ft)).metrics() if r["step"] == 0 and r["split"] == "train"]
    start = {r["member"]: r for r in RunDir(str(pt)).metrics() if r["step"] == 200 and r["split"] == "train"}
    for m, r in zip(RunDir(str(ft)).members(), first):
        assert r["loss"] == start[m["parent_member"]]["loss"]

@pytest.mark.e2e
def test_smoke_chain_end_to_end(smoke_sweep, tmp_path):
    out, proc = smoke_sweep  # run_all.sh --preset smoke --jobs 2 (conftest.py; test_summary_schema.py reads it too)
    assert "summary: " in proc.stdout and "[d1] " in proc.stdout  # two parts, side by side
    setup = out / "synthetic"
    summary = json.loads((setup / "summary.json").read_text())
    assert summary["plrs"] == sorted(summary["plrs"]) == [1e-3, 1e-2, 0.3]
    assert summary["dataset"] == "tick" and summary["model"] == "mlp_si"
    for e in summary["per_plr"]:
        for stage in (e["pretrain"], e["swa"], *e["finetune"].values()):
            assert 0 <= stage["test_acc"] <= 1
            f = stage["features_sorted"]
            assert len(f) == 16 and f == sorted(f, reverse=True)
        assert sorted(e["finetune"]) == ["0.0001", "0.003"]
        assert e["pretrain"]["n_seeds"] == 2  # data seed 0 from part d0, 1 from part d1
        geo = e["geometry"]  # eval_geometry.py: three pairs per PLR, angles in [0, pi], barriers >= 0
        assert 0 <= geo["angle_low_high"] <= 3.1416 and geo["test_barrier_swa_low"] >= 0
        assert e["regime"] in ("1", "2", "2A", "2B", "3")
    assert set(summary["boundaries"]) == {"1|2", "2A|2B", "2|3"}
    assert summary["recommended_plr"] in summary["plrs"] + [None]  # smoke numbers: any regime may be empty
    for name in ("pretrain", "accuracy", "train_loss", "features", "geometry"):
        assert (setup / "figures" / f"{name}.png").stat().st_size > 10_000
    assert "Recommended initial (pre-training) LR" in (setup / "report.md").read_text()
    # every metrics row has the contract's fields, and the weights stay on the unit sphere
    rows = RunDir(str(setup / "pretrain" / "d0")).metrics()
    assert {"member", "step", "split", "loss", "acc", "weight_norm"} <= set(rows[0])
    assert all(abs(r["weight_norm"] - 1) < 1e-5 for r in rows)
    assert {r["step"] for r in rows} == {0, 50, 100, 150, 200}
    # SWA's members and weights: the mean of the parent's last 5 snapshots (its kept steps)
    pt = RunDir(str(setup / "pretrain" / "d0"))
    parent = checkpoint.load(pt.final_ckpt)
    swa = final_state(setup / "swa" / "d0")
    assert parent["kept"] == [160, 170, 180, 190, 200]
    snaps = [checkpoint.load(pt.kept_ckpt("step", s))["state"] for s in parent["kept"]]
    assert torch.equal(snaps[-1]["fc1.weight"], parent["state"]["fc1.weight"])  # the last is the final step
    torch.testing.assert_close(swa["fc1.weight"], torch.stack([s["fc1.weight"] for s in snaps]).mean(0))
    assert torch.equal(swa["head.weight"], parent["state"]["head.weight"])  # the fixed head, as it is
    # a second run of the same sweep does nothing and changes nothing
    before = (setup / "summary.json").read_text()
    mtime = (setup / "pretrain" / "d0" / "results.json").stat().st_mtime_ns
    proc = run("bash", "run_all.sh", "--preset", "smoke", "--jobs", "2", "--out", out)
    assert proc.stdout.count("is complete; nothing to do") == 4 * 2  # train, finetune, swa, geometry
    assert (setup / "pretrain" / "d0" / "results.json").stat().st_mtime_ns == mtime
    assert json.loads((setup / "summary.json").read_text())["per_plr"] == json.loads(before)["per_plr"]
    # the report copes with a partial sweep: no SWA stage, fine-tuning not feature-evaluated
    part = tmp_path / "partial"
    shutil.copytree(setup, part, ignore=shutil.ignore_patterns("swa", "figures", "summary.json"))
    os.remove(part / "finetune" / "d0" / "features.jsonl")
    shutil.rmtree(part / "finetune" / "d1")  # and the fine-tuning of data seed 1 is missing altogether
    proc = run("report.py", "--root", part)
    summary = json.loads((part / "summary.json").read_text())
    assert all(e["pretrain"]["n_seeds"] == 2 and all(s["n_seeds"] == 1 for s in e["finetune"].values())
               for e in summary["per_plr"])
    assert all(e["regime"] in ("1", "2", "2A", "2B", "3") for e in summary["per_plr"])
    assert (part / "report.md").read_text().startswith("# partial: which initial learning rate?")
    assert all(e["swa"] is None for e in summary["per_plr"])
    assert all(s["features_sorted"] is None for e in summary["per_plr"] for s in e["finetune"].values())
    assert any("no swa runs" in n for n in summary["missing"]) and "note: no swa runs" in proc.stdout
    assert (part / "figures" / "features.png").exists()


def test_reruns_are_bitwise_identical(tmp_path):
    args = ("--lr", "1e-3", "3e-2", "--seed", "0", "1")
    train(tmp_path / "a", *args)
    train(tmp_path / "b", *args)
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [{k: v for k, v in r.items()} for r in RunDir(str(p)).metrics()]
    assert strip(tmp_path / "a") == strip(tmp_path / "b")


def test_member_in_population_equals_member_alone(tmp_path):
    train(tmp_path / "pop", "--lr", "1e-3", "5e-3", "3e-2", "--seed", "0", "1", "--data_seed", "0", "2",
          "--iters", "100", "--keep_snapshots", "0")
    train(tmp_path / "one", "--lr", "5e-3", "--seed", "1", "--data_seed", "2", "--iters", "100",
          "--keep_snapshots", "0")
    members = RunDir(str(tmp_path / "pop")).members()
    m = next(r["member"] for r in members if (r["plr"], r["seed"], r["data_seed"]) == (5e-3, 1, 2))
    pop, one = final_state(tmp_path / "pop"), final_state(tmp_path / "one")
    for k in ("fc1.weight", "fc2.weight", "head.weight"):
        torch.testing.assert_close(pop[k][m], one[k][0], atol=1e-5, rtol=0)
    # and it differs from its neighbours, so the comparison is not vacuous
    assert not torch.allclose(pop["fc1.weight"][m - 1], one["fc1.weight"][0], atol=1e-3)


def _start(out, *extra):
    cmd = [sys.executable, "train.py", "--smoke", "--threads", "1", "--out", str(out), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.02)


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, sig):
    # Interrupted right after the evaluation line of a random step in 50..200 (a checkpoint, of step
    # 40 or later, exists by then): thousands of steps remain, seconds of work on any machine, so the
    # signal always lands mid-run, and SIGTERM (honoured between blocks of 50 steps) well before the end.
    iters, at = 3000, random.choice([50, 100, 150, 200])
    args = ("--lr", "1e-3", "2e-2", "--seed", "0", "1", "--iters", str(iters), "--checkpoint_every", "40")
    train(tmp_path / "ref", *args)
    returncode, out = interrupt_at("train.py", "--smoke", "--threads", "1", "--out", tmp_path / "cut", *args,
                                   sig=sig, moment=rf"step +{at}/{iters} \|")
    assert returncode != 0, f"the run finished before {sig.name} at step {at}\n{out[-3000:]}"
    if sig == signal.SIGTERM:
        assert returncode == 143 and "checkpoint written at step" in out, out[-3000:]
    else:
        assert returncode == -signal.SIGKILL, out[-3000:]
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = train(tmp_path / "cut", *args)
    assert "resuming" in resumed.stdout
    ref, cut = final_state(tmp_path / "ref"), final_state(tmp_path / "cut")
    assert all(torch.equal(ref[k], cut[k]) for k in ref)
    assert RunDir(str(tmp_path / "ref")).metrics() == RunDir(str(tmp_path / "cut")).metrics()
    ref_rd, cut_rd = RunDir(str(tmp_path / "ref")), RunDir(str(tmp_path / "cut"))
    kept = checkpoint.load(ref_rd.final_ckpt)["kept"]
    assert kept == checkpoint.load(cut_rd.final_ckpt)["kept"] and kept
    for s in kept:  # the SWA snapshots, kept before or after the interruption alike
        a, b = (checkpoint.load(rd.kept_ckpt("step", s))["state"] for rd in (ref_rd, cut_rd))
        assert torch.equal(a["fc2.weight"], b["fc2.weight"])


def test_corrupt_last_checkpoint_falls_back_to_previous(tmp_path):
    path = str(tmp_path / "c.pt")
    checkpoint.save(path, {"kind": "pretrain", "step": 1})
    checkpoint.save(path, {"kind": "pretrain", "step": 2})
    with open(path, "r+b") as f:
        f.truncate(20)
    assert checkpoint.load(path, kinds=["pretrain"])["step"] == 1


def _lock_holder(run_dir):
    """The pid written into the run's .lock by the process that holds it (engine/rundir.py writes
    "host pid" right after taking the lock), or None."""
    words = (run_dir / ".lock").read_text().split() if (run_dir / ".lock").exists() else []
    return int(words[-1]) if words else None


def _wait_for_lock(run_dir, proc, timeout=120):
    """Wait until `proc` holds the run's lock (True) or has exited (False): no guessing with a sleep."""
    t0 = time.time()
    while proc.poll() is None:
        if _lock_holder(run_dir) == proc.pid:
            return True
        assert time.time() - t0 < timeout, "the process neither took the lock nor exited"
        time.sleep(0.02)
    return False


def test_two_processes_never_share_a_run(tmp_path):
    args = ("--lr", "1e-3", "--iters", "100000", "--checkpoint_every", "50")
    first = _start(tmp_path / "run", *args)
    try:
        _wait_for(tmp_path / "run" / "config.json", first)  # written after the lock is taken
        assert _lock_holder(tmp_path / "run") == first.pid
        second = run("train.py", "--smoke", "--threads", "1", "--out", tmp_path / "run", *args, check=False)
        assert second.returncode == 2 and "being written by another process" in second.stderr
        assert first.poll() is None  # the first one is untouched and still training
        assert _lock_holder(tmp_path / "run") == first.pid
    finally:
        first.kill()
        first.communicate()
    # the lock dies with its process: the next start takes the run over
    again = _start(tmp_path / "run", *args)
    try:
        took = _wait_for_lock(tmp_path / "run", again)
    finally:
        again.kill()
        _, err = again.communicate()
    assert took and again.returncode == -signal.SIGKILL, err  # it held the lock and was training when killed
    assert "being written by another process" not in err
