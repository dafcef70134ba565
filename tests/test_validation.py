"""Validation data, used for every choice: the split is disjoint from training and fixed by its seed
(images, an .npz's own, the synthetic example's draw); the sweep's choices read validation accuracy
where validation and test disagree; the arms of bench/lr_pick.py on a scale-invariant model with BN
(the effective LR logged, Schedule-Free's BN statistics recomputed at its averaged weights)."""
import sys

import numpy as np
import pytest
import torch

from analysis.sweep import add_regimes, selection, summarize
from conftest import ROOT, call
from core.errors import UserError
from data.tick import tick_data
from engine.module import read_data
from test_images_data import write_cifar
from test_own_model import write_npz

sys.path.insert(0, str(ROOT / "bench"))

SIZES = {**{f"data_batch_{i}": 20 for i in range(1, 6)}, "test_batch": 20}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10", sizes=SIZES)
    return root


def rows_of(x):
    return {bytes(r.numpy().tobytes()) for r in x.reshape(len(x), -1)}


def test_image_split_is_disjoint_fixed_and_keeps_the_order(cifar):
    cpu = torch.device("cpu")
    full = read_data("cifar10", cifar, False, None, None, cpu)
    a = read_data("cifar10", cifar, False, None, None, cpu, val_size=0.1)
    b = read_data("cifar10", cifar, False, None, None, cpu, val_size=0.1)
    assert "x_val" not in full and full["train_size"] == 100 and full["val_size"] == 0
    assert (a["train_size"], a["val_size"], a["train_kept"]) == (90, 10, 100)
    assert torch.equal(a["x_val"], b["x_val"]) and torch.equal(a["x_train"], b["x_train"])  # fixed by its seed
    assert not rows_of(a["x_val"]) & rows_of(a["x_train"])  # disjoint (the tiny images are distinct)
    assert rows_of(a["x_val"]) | rows_of(a["x_train"]) == rows_of(full["x_train"])
    pos = [next(i for i in range(100) if torch.equal(full["x_train"][i], x)) for x in a["x_train"]]
    assert pos == sorted(pos)  # the training images keep their order
    assert torch.equal(a["x_test"], full["x_test"]) and torch.allclose(a["xn_val"][0], full["xn_train"][
        next(i for i in range(100) if torch.equal(full["x_train"][i], a["x_val"][0]))])
    with pytest.raises(UserError, match="--val_size 0.999 of 100 training images"):
        read_data("cifar10", cifar, False, None, None, cpu, val_size=0.999)


def test_an_npz_brings_its_own_validation_set_or_is_split(tmp_path):
    cpu = torch.device("cpu")
    write_npz(tmp_path / "plain.npz")
    d = read_data(str(tmp_path / "plain.npz"), None, False, None, None, cpu, val_size=0.25)
    assert (d["train_size"], d["val_size"]) == (72, 24)
    arrays = dict(np.load(tmp_path / "plain.npz"))
    np.savez(tmp_path / "own.npz", **arrays, x_val=arrays["x_test"][:5], y_val=arrays["y_test"][:5])
    own = read_data(str(tmp_path / "own.npz"), None, False, None, None, cpu, val_size=0.25)
    assert own["train_size"] == 96 and own["val_size"] == 5  # its own, not a split of the training images
    assert torch.equal(own["x_val"], own["x_test"][:5])
    np.savez(tmp_path / "half.npz", **arrays, x_val=arrays["x_test"][:5])
    with pytest.raises(UserError, match="has x_val but not y_val"):
        read_data(str(tmp_path / "half.npz"), None, False, None, None, cpu)
    y_val = arrays["y_test"][:5].copy()
    y_val[0] = 9  # a class the training labels (0..2) never have
    np.savez(tmp_path / "unseen.npz", **arrays, x_val=arrays["x_test"][:5], y_val=y_val)
    with pytest.raises(UserError, match="y_val has the label 9, which y_train never has"):
        read_data(str(tmp_path / "unseen.npz"), None, False, None, None, cpu)


def test_the_synthetic_validation_set_is_a_draw_of_its_own():
    d, again = tick_data(3), tick_data(3)
    assert d["x_val"].shape == (2000, 32) and torch.equal(d["x_val"], again["x_val"])
    assert not rows_of(d["x_val"]) & rows_of(d["x_train"])
    assert not torch.equal(d["x_val"], d["x_test"]) and not torch.equal(d["x_val"], tick_data(4)["x_val"])
    assert set(d["y_val"].tolist()) == {0, 1} and abs(d["y_val"].float().mean() - 0.5) < 0.01  # balanced


def record(stage, plr, seed, val, test, flr=None, loss=1e-4, acc=1.0):
    return {"stage": stage, "plr": plr, "flr": flr, "seed": seed, "data_seed": None, "train_loss": loss,
            "train_acc": acc, "val_loss": 0.5, "val_acc": val, "test_loss": 0.5, "test_acc": test, "features": None,
            "bands": None, "band_split_groups": None, "curve": None, "run": "r", "setup": {},
            "meta": {"chance": 0.1, "recipe": {"sphere": "on"}, "model": "m", "dataset": "d"}}


def test_the_choice_reads_validation_accuracy():
    """Three regime-2 PLRs x 3 seeds: on validation 1e-2 is the best, on test 1e-1: the recommendation,
    the range and 2A follow validation; without validation rows the choice falls back to test and
    says so."""
    recs = []
    for plr, val, test in ((1e-3, 0.80, 0.85), (1e-2, 0.90, 0.80), (1e-1, 0.70, 0.95)):
        for seed in range(3):
            jitter = 0.001 * seed
            recs.append(record("pretrain", plr, seed, val, test, loss=0.3, acc=0.9))
            recs += [record("finetune", plr, seed, val + jitter, test + jitter, flr=f) for f in (1e-4, 1e-3)]
            recs.append(record("swa", plr, seed, val + jitter, test + jitter))
    summary = summarize(recs, "sweep")
    add_regimes(summary, recs, [])
    assert selection(recs) == summary["selection"] == "validation"
    assert summary["recommended_plr"] == 1e-2 and summary["recommended_range_plrs"] == [1e-2]
    assert [e["regime"] for e in summary["per_plr"]] == ["2B", "2A", "2B"]
    assert summary["per_plr"][1]["score"]["mean"] == pytest.approx(0.901) and summary["per_plr"][1]["score"]["se"] > 0
    assert "validation accuracy" in summary["recommendation_reason"]
    for r in recs:
        r["val_acc"] = None
    summary = summarize(recs, "sweep")
    add_regimes(summary, recs, [])
    assert summary["selection"] == "test" and summary["recommended_plr"] == 1e-1
    assert "test accuracy" in summary["recommendation_reason"]


@pytest.fixture(scope="module")
def tiny_si(cifar):
    from harness import setup
    return setup(["--dataset", "cifar10", "--data_dir", str(cifar), "--model", "convnet_si", "--width", "4",
                  "--batch_size", "16", "--threads", "1"], seed=0)


@pytest.mark.parametrize("arm", ["prodigy", "dadaptation", "schedulefree", "default"])
@pytest.mark.parametrize("sphere", [False, True])
def test_every_arm_trains_and_logs_its_effective_lr(tiny_si, arm, sphere):
    pytest.importorskip({"prodigy": "prodigyopt", "dadaptation": "dadaptation", "schedulefree": "schedulefree",
                         "default": "torch"}[arm])
    from arms import train_arm
    from engine.sphere import si_norm
    if arm == "default" and sphere:
        pytest.skip("the default arm runs off the sphere only")
    out = train_arm(arm, tiny_si, 12, sphere=sphere, keep_model=True)
    assert 0 <= out["test_acc"] <= 1 and 0 <= out["val_acc"] <= 1
    trace = out["effective_lr_trace"]
    assert [t["step"] for t in trace] == list(range(12)) and all(t["elr"] > 0 for t in trace)
    assert out["effective_lr"] == pytest.approx(np.exp(np.mean(np.log([t["elr"] for t in trace]))))
    if sphere:  # the step size over R^2, the weights kept on the sphere
        assert all(t["elr"] == pytest.approx(t["lr"] / tiny_si["radius"] ** 2) for t in trace)
        if arm != "schedulefree":  # (its evaluation weights are an average of two sequences on the sphere)
            assert si_norm(out["model"]) == pytest.approx(tiny_si["radius"], rel=1e-5)


def test_schedule_free_evaluates_its_averaged_weights_with_their_bn_statistics(tiny_si):
    pytest.importorskip("schedulefree")
    from arms import train_arm
    from harness import recompute_bn
    out = train_arm("schedulefree", tiny_si, 12, keep_model=True)
    model, opt = out["model"], out["optimizer"]
    assert opt.param_groups[0]["train_mode"] is False  # optimizer.eval(): the weights are its average
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    again = recompute_bn(model, tiny_si, n_batches=50)  # the same 50 batches again: the same statistics
    assert stats and all(torch.equal(stats[k], v) for k, v in again.state_dict().items() if k in stats)
    opt.train()  # the training sequence's weights hold other statistics
    fresh = recompute_bn(model, tiny_si, n_batches=50)
    assert any(not torch.equal(stats[k], v) for k, v in fresh.state_dict().items() if k in stats)


def test_train_py_records_the_split(cifar, tmp_path):
    from engine.rundir import RunDir
    call("train.py", "--dataset", "cifar10", "--data_dir", cifar, "--model", "convnet_si", "--width", "4", "--epochs",
         "1", "--batch_size", "32", "--lr", "1e-2", "--out", tmp_path / "run")
    rd = RunDir(str(tmp_path / "run"))
    assert {r["split"] for r in rd.metrics()} == {"train", "val", "test"}
    member = rd.results()["members"][0]
    assert 0 <= member["val_acc"] <= 1 and "val_loss" in member
    assert "90 train / 10 validation / 20 test images" in call("train.py", "--dataset", "cifar10", "--data_dir", cifar,
                                                               "--model", "convnet_si", "--width", "4", "--epochs",
                                                               "1", "--lr", "1e-1", "--out", tmp_path / "b").stdout
    bad = call("train.py", "--lr", "1e-2", "--val_size", "0.1", "--smoke", "--out", tmp_path / "c", check=False)
    assert bad.returncode == 2 and "--val_size does not apply to this model" in bad.stderr
