"""The cheap scan (run_all.sh --preset scan) and the comparison with the LR range tests
(bench/lr_pick.py): a scan's runs are the prefixes of the sweep's, so its pick can be read off the
sweep; lr_pick.py end to end on the smoke preset, its numbers traced back to the runs they come from."""
import json
import os
import sys

import pytest

from conftest import ROOT, run
from test_images_data import write_cifar
from engine.rundir import RunDir

sys.path.insert(0, str(ROOT / "bench"))
from analysis.sweep import key, scan_pick  # noqa: E402
from lr_pick import METHODS, set_flag  # noqa: E402

SIZES = {**{f"data_batch_{i}": 24 for i in range(1, 6)}, "test_batch": 40}


def test_set_flag():
    argv = ["python", "train.py", "--lr", "1e-3", "1e-2", "--seed", "0", "--smoke", "--out", "x"]
    assert set_flag(argv, "--lr", 0.5) == ["python", "train.py", "--seed", "0", "--smoke", "--out", "x", "--lr", "0.5"]
    assert set_flag(argv, "--seed") == ["python", "train.py", "--lr", "1e-3", "1e-2", "--smoke", "--out", "x"]
    assert set_flag(argv, "--iters", 7)[-2:] == ["--iters", "7"]


@pytest.mark.e2e
def test_scan_is_the_sweeps_prefix(tmp_path):
    """A custom image setup: the scan (a fifth of 5 epochs = 1 epoch per PLR) trains the same first
    epoch as the sweep, bit for bit, and report.py's pick on the scan is scan_pick's on the sweep."""
    write_cifar(tmp_path / "data", "cifar10", sizes=SIZES)
    common = ["bash", "run_all.sh", "--setup", "mine", "--model", "convnet_si", "--model_args", "width=4",
              "--dataset", "cifar10", "--data_dir", tmp_path / "data", "--plrs", "1e-3 3e-2 1 30", "--epochs", "5",
              "--seeds", "0", "--out", tmp_path / "runs"]
    run(*common, "--stages", "pretrain")
    scan = run(*common, "--preset", "scan")
    assert "== finetune" not in scan.stdout
    sweep, cut = tmp_path / "runs" / "mine", tmp_path / "runs" / "mine" / "scan"
    for p in ("1e-3", "3e-2", "1", "30"):
        a = [r for r in RunDir(str(sweep / "pretrain" / f"plr{p}_s0")).metrics() if r["epoch"] <= 1]
        b = RunDir(str(cut / "pretrain" / f"plr{p}_s0")).metrics()
        strip = lambda rows: [{k: v for k, v in r.items() if k != "lr_now"} for r in rows]  # noqa: E731
        assert b and strip(a) == strip(b)
        assert RunDir(str(cut / "pretrain" / f"plr{p}_s0")).config()["args"]["epochs"] == 1
    summary = json.load(open(cut / "summary.json"))
    runs = [RunDir(str(sweep / "pretrain" / d)) for d in sorted(os.listdir(sweep / "pretrain"))]
    pick, steps = scan_pick(runs, (0, None), 1, 0.1, False)
    assert pick == summary["recommended_plr"] and steps == 120 // 128 + 1  # one epoch of batches


@pytest.mark.e2e
@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("torch_lr_finder", "pytorch_lightning")),
                    reason="bench/requirements.txt not installed")
def test_lr_pick_smoke_end_to_end(tmp_path):
    out = tmp_path / "runs"
    proc = run("bench/lr_pick.py", "--setup", "synthetic", "--preset", "smoke", "--out", out, "--n_seeds", "2",
               "--jobs", "2")
    assert "written:" in proc.stdout
    res = json.load(open(out / "synthetic" / "lr_pick.json"))
    summary = json.load(open(out / "synthetic" / "summary.json"))
    assert list(res["methods"]) == list(METHODS) and res["seeds"] == [[0, 0], [0, 1]]
    for name, m in res["methods"].items():
        assert len(m["lrs"]) == 2 and isinstance(m["cost_steps"], int) and m["cost_steps"] >= 0, name
        for k in ("finetune", "swa", "cosine"):
            if m[f"{k}_acc_mean"] is not None:
                assert 0 <= m[f"{k}_acc_mean"] <= 1 and m[f"{k}_acc_std"] >= 0
    rec = res["methods"]["recommended"]
    assert rec["lrs"] == [key(summary["recommended_plr"])] * 2
    # the sweep's cost: 3 PLRs x 2 seeds x 200 pre-training steps + 2 FLRs x 100 fine-tuning steps each
    assert rec["cost_steps"] == 3 * 2 * (200 + 2 * 100)
    # a range test takes at most 100 steps, and its picks are what range_tests.json holds
    tests = json.load(open(out / "synthetic" / "lr_pick" / "range_tests.json"))
    for name in ("torch_lr_finder", "lightning"):
        assert 0 < res["methods"][name]["cost_steps"] <= 100
        elrs = [tests[f"s0_d{d}"][name]["elr"] for d in (0, 1)]
        assert res["methods"][name]["lrs"] == [None if e is None else key(e) for e in elrs]
    # the recommended PLR's fine-tuned accuracy is the sweep's run at the low FLR, seed by seed
    ft = {(m["seed"], m["data_seed"], m["plr"], m["flr"]): r["test_acc"]
          for d in ("d0", "d1") for m, r in zip(RunDir(str(out / "synthetic" / "finetune" / d)).members(),
                                                RunDir(str(out / "synthetic" / "finetune" / d)).results()["members"])}
    for row in rec["per_seed"]:
        assert row["finetune_acc"] == ft[(row["seed"][0], row["seed"][1], summary["recommended_plr"], 1e-4)]
    # the cosine runs: the schedule and the pre-training + fine-tuning length, at the picked LR
    cos = out / "synthetic" / "lr_pick" / "cosine" / "pretrain"
    for d in os.listdir(cos):
        args = RunDir(str(cos / d)).config()["args"]
        assert args["schedule"] == "cosine" and args["iters"] == 300 and len(args["lr"]) == 1
    # rerunning trains nothing and writes the same table
    again = run("bench/lr_pick.py", "--setup", "synthetic", "--preset", "smoke", "--out", out, "--n_seeds", "2",
                "--jobs", "2")
    assert "== 0 of" in again.stdout and json.load(open(out / "synthetic" / "lr_pick.json")) == res
