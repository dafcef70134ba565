"""The adaptive scan against the sweep, and the held-out comparison (bench/lr_pick.py): a scan's runs
are the prefixes of the sweep's, so it can be replayed on the sweep; its cost and flags in lr_pick;
lr_pick.py end to end on the smoke preset, its numbers traced back to the runs they come from."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT, call, run
from data.images import FMNIST_SYSTEM_DIR
from test_images_data import write_cifar
from engine.rundir import RunDir

sys.path.insert(0, str(ROOT / "bench"))
from analysis.scan import Replay, replay  # noqa: E402
from analysis.sweep import key  # noqa: E402
from arms import ARMS, LR_FREE  # noqa: E402
from lr_pick import METHODS, scan_cost, scan_flags, set_flag  # noqa: E402

SIZES = {**{f"data_batch_{i}": 24 for i in range(1, 6)}, "test_batch": 40}


def test_set_flag():
    argv = ["python", "train.py", "--lr", "1e-3", "1e-2", "--seed", "0", "--smoke", "--out", "x"]
    assert set_flag(argv, "--lr", 0.5) == ["python", "train.py", "--seed", "0", "--smoke", "--out", "x", "--lr", "0.5"]
    assert set_flag(argv, "--seed") == ["python", "train.py", "--lr", "1e-3", "1e-2", "--smoke", "--out", "x"]
    assert set_flag(argv, "--iters", 7)[-2:] == ["--iters", "7"]


def test_the_scan_costs_its_runs_and_its_picks_final_run():
    """Runs of 60 (40 + 20): a scan that spent 0.5 runs and trained its pick to 10 then trains the pick
    to 40 and fine-tunes it (50 more, 5/6 of a run); an inconclusive one costs its runs alone."""
    per = [{"plr": 1e-3, "steps": 5}, {"plr": 1e-2, "steps": 10}]
    assert scan_cost({"pick": 1e-2, "cost_runs": 0.5, "run_length": 60, "per_plr": per}) == pytest.approx(0.5 + 50 / 60)
    assert scan_cost({"pick": None, "cost_runs": 0.5, "run_length": 60, "per_plr": per}) == 0.5


def test_the_scan_arm_passes_scan_py_flags_it_accepts():
    """An image sweep's flags hold --epochs and SWA's --save_epochs, which a scan's short runs cannot take:
    the scan arm drops them (scan.py then gets as far as its budget check)."""
    flags = ["--dataset", "fashion_mnist", "--model", "convnet_si", "--model_args", "width=8", "--epochs", "30",
             "--train_size", "2000", "--eval_every", "1", "--save_epochs", "22", "24", "--threads", "1"]
    assert scan_flags(flags, 2) == flags[:6] + ["--train_size", "2000", "--threads", "2"]
    proc = call("scan.py", "--plrs", "1e-3", "--full", "30", "--finetune", "10", "--budget", "0", "--out", "x", "--",
                *scan_flags(flags, 2), "--seed", "0", check=False)
    assert proc.returncode == 2 and "--budget 0.0: give a positive number of runs" in proc.stderr, proc.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("model, sphere, reads", [("convnet_si", "on", "train loss"), ("convnet", "off", "val acc")])
def test_scan_is_the_sweeps_prefix(model, sphere, reads, tmp_path):
    """A custom image setup, on the sphere (the curve tests) and off it (successive halving on validation
    accuracy): the adaptive scan's runs (run_all.sh --preset scan at the sweep's lengths) train the same
    first epochs as the sweep's, bit for bit, and its decisions replayed on the sweep's own rows
    (bench/scan_budget.py) are the real scan's."""
    if sphere == "on":  # random images: the curve tests on losses that do not fall far
        write_cifar(tmp_path / "data", "cifar10", sizes=SIZES)
        data = ["--dataset", "cifar10", "--data_dir", tmp_path / "data"]
    else:  # real images, for accuracies worth ranking
        if not (FMNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
            pytest.skip("needs Debian's dataset-fashion-mnist")
        data = ["--dataset", "fashion_mnist", "--train_size", "400", "--test_size", "100"]
    common = ["bash", "run_all.sh", "--setup", "mine", "--model", model, "--model_args", "width=4", *data,
              "--plrs", "1e-3 3e-2 1 30", "--epochs", "8", "--ft_epochs", "4", "--seeds", "0", "--out", tmp_path / "runs"]
    run(*common, "--stages", "pretrain")
    run(*common, "--preset", "scan", "--budget", "4")
    sweep, cut = tmp_path / "runs" / "mine", tmp_path / "runs" / "mine" / "scan_s0"
    scan = json.load(open(cut / "scan.json"))
    names = {float(k): v for k, v in scan["runs"].items()}
    for e, p in zip(scan["per_plr"], ("1e-3", "3e-2", "1", "30")):
        b = RunDir(str(cut / "pretrain" / names[e["plr"]])).metrics()
        a = [r for r in RunDir(str(sweep / "pretrain" / f"plr{p}_s0")).metrics() if r["epoch"] <= e["steps"]]
        assert b and a == b, p  # the scan's run is the sweep's first epochs
    runs = [RunDir(str(sweep / "pretrain" / d)) for d in sorted(os.listdir(sweep / "pretrain"))]
    plan = replay(Replay(runs, (0, None)), [1e-3, 3e-2, 1.0, 30.0], 8, 12, 4, 0.1, sphere == "off")
    assert plan.summary()["per_plr"] == scan["per_plr"] and plan.pick == scan["pick"] and scan["reads"] == reads
    if sphere == "off":  # 3e-2 learns, 1 and 30 diverge: the race is between 1e-3 and 3e-2
        assert scan["pick"] in (1e-3, 3e-2) and {e["plr"]: e["regime"] for e in scan["per_plr"]}[30.0] == "3"
        summary = json.load(open(cut / "summary.json"))
        assert summary["selection"] == "validation" and "found by successive halving" in summary["recommendation_reason"]
        assert "How sure: successive halving on one seed's validation accuracy" in (cut / "report.md").read_text()
    assert json.load(open(cut / "summary.json"))["recommended_plr"] == scan["pick"]


NEED = ("torch_lr_finder", "pytorch_lightning", "prodigyopt", "dadaptation", "schedulefree")


@pytest.mark.e2e
@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in NEED),
                    reason="bench/requirements.txt not installed")
def test_lr_pick_smoke_end_to_end(tmp_path):
    out = tmp_path / "runs"
    cmd = ("bench/lr_pick.py", "--setup", "synthetic", "--preset", "smoke", "--out", out, "--eval_seeds", "7 8 9",
           "--jobs", "2")
    proc = run(*cmd, timeout=1200)
    assert "written:" in proc.stdout
    res = json.load(open(out / "synthetic" / "lr_pick.json"))
    summary = json.load(open(out / "synthetic" / "summary.json"))
    assert res["selection"] == summary["selection"] == "validation"
    assert res["sweep_seeds"] == [[0, 0], [0, 1]] and res["eval_seeds"] == [[7, 7], [8, 8], [9, 9]]
    names = list(METHODS[:-1]) + [f"{a}_sphere" for a in LR_FREE] + ["grid_best"]
    assert sorted(res["methods"]) == sorted(names)
    run_steps = 200 + 100  # one smoke run: 200 pre-training + 100 fine-tuning iterations
    assert res["run_steps"] == run_steps
    for name, m in res["methods"].items():
        assert m["kind"] == {"recommended": "pick", "scan": "pick", "torch_lr_finder": "pick", "lightning": "pick",
                             "grid_best": "oracle", "default": "default"}.get(name, "lr_free"), name
        assert len(m["per_seed"]) == 3, name
        if name == "scan" and m["outcome"]["pick"] is None:  # an inconclusive scan: nothing to score, its cost counted
            assert m["lrs"] == [None] * 3 and m["final_acc_mean"] is None and m["cost_runs"] > 0
            assert m["outcome"]["stopped_because"] and m["vs_recommended"]["n"] == 0
            continue
        assert 0 <= m["final_acc_mean"] <= 1 and m["final_acc_std"] >= 0, name
        if name != "recommended":
            assert m["vs_recommended"]["n"] == 3
    rec = res["methods"]["recommended"]
    assert rec["lrs"] == [key(summary["recommended_plr"])] * 3
    # the sweep's cost: 3 PLRs x 2 data seeds x (200 + 2 FLRs x 100) steps; SWA averages kept steps (no training)
    assert rec["cost_runs"] == pytest.approx(3 * 2 * (200 + 2 * 100) / run_steps)
    assert res["methods"]["grid_best"]["cost_runs"] is None  # an oracle
    said = json.load(open(out / "synthetic" / "lr_pick" / "scan" / "scan.json"))  # the scan: its own runs, its pick,
    trained = {e["plr"]: e["steps"] for e in said["per_plr"]}.get(said["pick"], said["run_length"])  # its final run
    assert res["methods"]["scan"]["cost_runs"] == pytest.approx(said["cost_runs"] + 1 - trained / said["run_length"])
    assert said["cost_runs"] <= 2
    assert res["methods"]["scan"]["lrs"] == [None if said["pick"] is None else key(said["pick"])] * 3
    tests = json.load(open(out / "synthetic" / "lr_pick" / "range_tests.json"))
    for name in ("torch_lr_finder", "lightning"):  # a range test: its steps, plus the run it picks for
        steps = np.mean([tests[f"s{d}_d{d}"][name]["steps"] for d in (7, 8, 9)])
        assert res["methods"][name]["cost_runs"] == pytest.approx(1 + steps / run_steps)
        elrs = [tests[f"s{d}_d{d}"][name]["elr"] for d in (7, 8, 9)]
        assert res["methods"][name]["lrs"] == [None if e is None else key(e) for e in elrs]
        assert all(r["final_acc"] == r["cosine_acc"] for r in res["methods"][name]["per_seed"])
    for name in list(ARMS) + [f"{a}_sphere" for a in LR_FREE]:  # one run each, its effective LR logged
        m = res["methods"][name]
        assert m["cost_runs"] == 1 and all(e is not None and e > 0 for e in m["effective_lrs"]), name
        assert m["sphere"] == name.endswith("_sphere")
    # the recommended PLR's final accuracy: the held-out seeds' fine-tuning at the low FLR, seed by seed
    ft = {}
    for d in (7, 8, 9):
        rd = RunDir(str(out / "synthetic" / "lr_pick" / "finetune" / f"s{d}_d{d}"))
        for m, r in zip(rd.members(), rd.results()["members"]):
            ft[(m["seed"], m["data_seed"], m["plr"], m["flr"])] = r["test_acc"]
    for row in rec["per_seed"]:
        assert row["final_acc"] == row["finetune_acc"] == ft[(*row["seed"], summary["recommended_plr"], 1e-4)]
    best = res["methods"]["grid_best"]  # the oracle: the grid's best mean fine-tuned test accuracy, held out
    means = {p: np.mean([ft[(d, d, p, 1e-4)] for d in (7, 8, 9)]) for p in summary["plrs"]}
    assert best["lrs"][0] == key(max(means, key=lambda p: (means[p], -p)))
    # the cosine runs: the schedule and the pre-training + fine-tuning length, at the picked LR
    cos = out / "synthetic" / "lr_pick" / "cosine" / "pretrain"
    for d in os.listdir(cos):
        args = RunDir(str(cos / d)).config()["args"]
        assert args["schedule"] == "cosine" and args["iters"] == run_steps and len(args["lr"]) == 1
    assert (out / "synthetic" / "figures" / "lr_free.png").stat().st_size > 10_000
    # rerunning trains nothing and writes the same table
    again = run(*cmd, timeout=1200)
    assert "== the arms: 0 of" in again.stdout and "== the picks: 0 of" in again.stdout
    assert json.load(open(out / "synthetic" / "lr_pick.json")) == res


@pytest.mark.parametrize("flags, message", [
    (("--methods", "random_search"), "--methods random_search: unknown"),
    (("--eval_seeds", "0 7 8"), "--eval_seeds 0: the sweep uses these seeds"),
    (("--eval_seeds", "7 8"), "give at least 3 held-out seeds"),
    (("--eval_seeds", "7 x"), "--eval_seeds '7 x': give non-negative integers"),
])
def test_bad_input_is_one_line(flags, message, tmp_path):
    proc = call("bench/lr_pick.py", "--setup", "synthetic", "--preset", "smoke", "--eval_seeds", "7 8 9", *flags,
                "--out", tmp_path, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not os.listdir(tmp_path)  # before the sweep: nothing written


def test_a_missing_package_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # as if bench/requirements.txt had not been installed
    proc = call("bench/lr_pick.py", "--setup", "synthetic", "--preset", "smoke", "--eval_seeds", "7 8 9",
                "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "the package prodigyopt is missing: pip install -r bench/requirements.txt" \
        in proc.stderr and not os.listdir(tmp_path)
