"""eval_geometry.py on image runs (docs/protocol.md section 5, appendix G): angles and error barriers along
re-projected linear paths with BN statistics recomputed at every point, finetune.py --sharpness
against an independent computation, and the test error and sharpness read off at a training loss.

One fine-tuning run of the SI ConvNet (conftest.py: si_sweep) is copied into variants whose final
checkpoints are edited, each tagged with its own PLR so that one eval_geometry.py call measures
them all: "same" (both members hold member 0's weights), "corrupt" (nonsense BN running
statistics), "perm" (member 1 is member 0 with the channels of its hidden convolutions permuted:
the same function, another point) and "rows" (constructed metrics.jsonl rows for the appendix-G
comparison).
"""
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import run
from data.images import load_images, normalize
from models import build
from engine import checkpoint
from analysis.geometry import barrier
from engine.sphere import angle, interpolate
from engine.module import bn_batches
from engine.step import speed_setup
from engine.rundir import RunDir
from engine.sphere import recompute_bn_stats

PLR = 1e-3  # the si_sweep member that learned; its two fine-tuned members are the pair low/high
TAGS = {"same": 2e-3, "corrupt": 3e-3, "perm": 4e-3, "rows": 5e-3}
HIDDEN_CONVS = [("0", "1", "3"), ("3", "4", "7"), ("7", "8", "11")]  # (conv, its BN, next conv) of ConvNetSI
POINTS = 5


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the scripts ran (--threads 1): the same reduction order, and no two threads
    fighting over a loaded machine's cores (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def permute_channels(state, seed=0):
    """ConvNetSI weights with the output channels of the first three convolutions permuted (and the
    input channels of the next, and the BN statistics in between): the same function."""
    g = torch.Generator().manual_seed(seed)
    out = dict(state)
    for conv, bn, nxt in HIDDEN_CONVS:
        p = torch.randperm(out[f"{conv}.weight"].shape[0], generator=g)
        out[f"{conv}.weight"] = out[f"{conv}.weight"][p]
        out[f"{nxt}.weight"] = out[f"{nxt}.weight"][:, p]
        for k in ("running_mean", "running_var"):
            out[f"{bn}.{k}"] = out[f"{bn}.{k}"][p]
    return out


def variant(src, dst, plr, edit=None):
    """A copy of the fine-tuning run `src` holding only the members fine-tuned from PLR, relabelled
    with `plr`; edit(list of member state_dicts) -> the states to write instead."""
    shutil.copytree(src, dst)
    path = str(dst / "checkpoints" / "final.pt")
    ck = checkpoint.load(path)
    keep = [i for i, m in enumerate(ck["members"]) if m["plr"] == PLR]
    states = [checkpoint.member(ck["state"], i) for i in keep]
    if edit is not None:
        states = edit(states)
    ck = dict(ck, members=[dict(ck["members"][i], plr=plr) for i in keep], state=checkpoint.stack(states))
    checkpoint.save(path, ck)
    (dst / "checkpoints" / "final.pt.prev").unlink()  # the original, kept by save
    return dst


def corrupt_bn(states):
    return [{k: (torch.full_like(v, 50.0) if k.endswith("running_mean") else
                 torch.full_like(v, 1e-4) if k.endswith("running_var") else v) for k, v in s.items()}
            for s in states]


# Appendix-G rows (member 0): (epoch, train loss, sharpness, test acc); None = that row is absent. Only
# epochs with both a train row with sharpness and a test row count: 0, 3, 4, 5, 6. The loss first
# falls to 6e-4 between epochs 3 (1e-3) and 4 (5e-4), at t = (1e-3 - 6e-4) / (1e-3 - 5e-4) = 0.8:
# sharpness 4 + 0.8 (2 - 4) = 2.4, test error 0.2 + 0.8 (0.1 - 0.2) = 0.12. Epoch 1 (no test row) and
# epoch 2 (no sharpness) would cross earlier if they counted; epoch 6 crosses again, ignored.
ROWS_0 = [(0, 2e-2, 5.0, 0.5), (1, 5e-4, 9.0, None), (2, 5e-4, None, 0.99), (3, 1e-3, 4.0, 0.8),
          (4, 5e-4, 2.0, 0.9), (5, 1e-4, 1.0, 0.95), (6, 7e-4, 3.0, 0.9)]
ROWS_1 = [(0, 5e-4, 6.0, 0.9), (1, 1e-4, 5.0, 0.95)]  # below 6e-4 from the start: no crossing seen


def write_rows(rd, table):
    rows = []
    for member, entries in table.items():
        for epoch, loss, sharp, acc in entries:
            train = {"member": member, "epoch": epoch, "step": epoch, "split": "train", "loss": loss, "acc": 0.5}
            rows.append(train if sharp is None else dict(train, sharpness=sharp))
            if acc is not None:
                rows.append({"member": member, "epoch": epoch, "step": epoch, "split": "test", "loss": 1.0,
                             "acc": acc})
    with open(rd / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def geo(si_sweep, tmp_path_factory):
    """The variants and one eval_geometry.py run over them and the original: (results, runs)."""
    base = tmp_path_factory.mktemp("geo")
    ft = si_sweep["finetune"]
    runs = {"clean": ft,
            "same": variant(ft, base / "same", TAGS["same"], lambda s: [s[0], dict(s[0])]),
            "corrupt": variant(ft, base / "corrupt", TAGS["corrupt"], corrupt_bn),
            "perm": variant(ft, base / "perm", TAGS["perm"], lambda s: [s[0], permute_channels(s[0])]),
            "rows": variant(ft, base / "rows", TAGS["rows"])}
    write_rows(runs["rows"], {0: ROWS_0, 1: ROWS_1})
    run("eval_geometry.py", "--finetune", *runs.values(), "--points", str(POINTS), "--threads", "1",
        "--out", base / "geometry")
    return RunDir(str(base / "geometry")).results(), runs


def pair(results, plr):
    (row,) = [r for r in results["pairs"] if r["plr"] == plr and r["pair"] == "low_high"]
    return row


def test_every_row_is_its_path(geo):
    results, _ = geo
    # one low/high pair per PLR (no SWA runs given), 5 points each, barriers of their own curves
    assert sorted(r["plr"] for r in results["pairs"]) == sorted([PLR, 10.0, *TAGS.values()])
    assert results["low"] == 1e-3 and results["high"] == 1e-2
    for r in results["pairs"]:
        assert r["pair"] == "low_high" and r["alphas"] == [0, 0.25, 0.5, 0.75, 1]
        assert len(r["train_err"]) == len(r["test_err"]) == POINTS
        assert r["train_barrier"] == barrier(r["train_err"]) and r["test_barrier"] == barrier(r["test_err"])
        assert 0 <= r["angle"] <= math.pi


def test_identical_members_have_zero_angle_and_no_barrier(geo):
    results, _ = geo
    same, clean = pair(results, TAGS["same"]), pair(results, PLR)
    assert same["angle"] < 1e-6
    assert same["train_barrier"] == 0 and same["test_barrier"] == 0
    # every point of the path is the same model: the same errors all along, member 0's of the original
    assert same["train_err"] == [clean["train_err"][0]] * POINTS
    assert same["test_err"] == [clean["test_err"][0]] * POINTS
    assert clean["angle"] > 0.01 and clean["train_err"][0] != clean["train_err"][-1]  # the original pair differs


def recomputed_errors(run_dir, data, i):
    """Member i of a run as path() takes an endpoint, by hand: re-projected onto its sphere, BN statistics
    from one pass over the shuffled training set (bn_batches), then (train error in train mode, test
    error in eval mode). Train mode normalises with each batch's statistics: the run's batches (128)
    in order, on every device."""
    ck = checkpoint.load(str(run_dir / "checkpoints" / "final.pt"))
    m = ck["members"][i]
    model = build("convnet_si", 0, ck["model_args"])
    state = checkpoint.member(ck["state"], i)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    w = {n: state[n] for n in names}
    model.load_state_dict(dict(state, **interpolate(w, w, 0.0, m["radius"])))
    recompute_bn_stats(model, bn_batches(data, ck["batch_size"], m["seed"]))
    with torch.no_grad():
        test = (model.eval()(data["xn_test"]).argmax(1) != data["y_test"]).double().mean().item()
        model.train()
        train = torch.cat([model(x).argmax(1) for x in data["xn_train"].split(ck["batch_size"])])
        train = (train != data["y_train"]).double().mean().item()
    return train, test


def stored_stats_test_error(run_dir, data, i):
    ck = checkpoint.load(str(run_dir / "checkpoints" / "final.pt"))
    model = build("convnet_si", 0, ck["model_args"])
    model.load_state_dict(checkpoint.member(ck["state"], i))
    with torch.no_grad():
        return (model.eval()(data["xn_test"]).argmax(1) != data["y_test"]).double().mean().item()


@pytest.fixture(scope="module")
def data(si_sweep):
    d = load_images("cifar10", si_sweep["data"])
    return dict(d, xn_train=normalize(d["x_train"], d["mean"], d["std"]),
                xn_test=normalize(d["x_test"], d["mean"], d["std"]))


def test_bn_statistics_are_recomputed_at_every_point(geo, data):
    results, runs = geo
    corrupt, clean = pair(results, TAGS["corrupt"]), pair(results, PLR)
    # the checkpoint's running statistics play no part anywhere on the path
    assert corrupt["train_err"] == clean["train_err"] and corrupt["test_err"] == clean["test_err"]
    for i, end in ((0, 0), (1, -1)):  # the endpoints: each member evaluated with recomputed statistics
        train, test = recomputed_errors(runs["corrupt"], data, i)
        assert (corrupt["train_err"][end], corrupt["test_err"][end]) == pytest.approx((train, test), abs=1e-12)
    # not vacuous: with the corrupted statistics in eval mode the model answers differently
    assert stored_stats_test_error(runs["corrupt"], data, 0) != pytest.approx(clean["test_err"][0], abs=0.02)


def test_permuted_copy_same_endpoints_barrier_in_between(geo):
    results, runs = geo
    perm = pair(results, TAGS["perm"])
    # both endpoints are the same function (BN statistics recomputed from the same batches)
    assert perm["train_err"][0] == perm["train_err"][-1] and perm["test_err"][0] == perm["test_err"][-1]
    # so the barrier is the worst excess over that common endpoint error
    for split in ("train", "test"):
        errs = perm[f"{split}_err"]
        assert perm[f"{split}_barrier"] == pytest.approx(max(errs) - errs[0], abs=1e-12)
    # the midpoint mixes unrelated filters channel by channel: it is much worse than either end
    assert perm["train_barrier"] > 0.2 and perm["test_barrier"] > 0.2
    # the angle: between the flattened SI weights of the two members, float64
    ck = checkpoint.load(str(runs["perm"] / "checkpoints" / "final.pt"))
    s = [checkpoint.member(ck["state"], i) for i in (0, 1)]
    convs = [f"{c}.weight" for c in ("0", "3", "7", "11")]
    u, v = (torch.cat([t[k].double().flatten() for k in convs]) for t in s)
    assert perm["angle"] == pytest.approx(math.acos(float(u @ v / (u.norm() * v.norm()))), rel=1e-9)
    assert perm["angle"] == pytest.approx(angle([s[0][k] for k in convs], [s[1][k] for k in convs]), rel=1e-12)
    assert perm["angle"] > 0.3


def test_barrier_known_maximum_excess():
    # a path whose worst error is at an endpoint has no barrier; the excess over the chord counts, not
    # the excess over the worse endpoint
    assert barrier([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(0.0)
    assert barrier([0.5, 0.45, 0.4, 0.2, 0.1]) == pytest.approx(0.1)  # 0.4 where the chord is at 0.3
    # uneven points: the chord is 0.3 at alpha 0.5, where the error is 0.6 (0.1 above the worse endpoint)
    assert barrier([0.1, 0.3, 0.6, 0.3, 0.5], [0, 0.1, 0.5, 0.9, 1]) == pytest.approx(0.3)


# ---------------------------------------------------------------- appendix G

def sharpness_by_hand(model, x, y, batch):
    """Mean over the training set's mini-batches in order (no shuffle, no augmentation, the last
    shorter batch included) of ||grad of the mini-batch loss w.r.t. the trainable (SI) weights||,
    train-mode BN; in the memory format and with the one thread the run used (--threads 1), so that
    the convolutions add up in the same order (a member stuck at PLR 10 is sensitive to it: 1e-3 apart
    in NCHW on one CPU)."""
    model = speed_setup(model, torch.device("cpu"), "auto", False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _sharpness_by_hand(model, x, y, batch)
    finally:
        torch.set_num_threads(threads)


def _sharpness_by_hand(model, x, y, batch):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    norms = []
    for s in range(0, len(y), batch):
        loss = F.cross_entropy(model(x[s:s + batch]), y[s:s + batch])
        grads = torch.autograd.grad(loss, params)
        norms.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    assert len(norms) == 3  # 300 images: 128, 128, 44
    return float(torch.stack(norms).mean())


def test_sharpness_column_is_the_mean_minibatch_gradient_norm(si_sweep, data):
    # to 1e-5: the same kernels as the run; a shuffled, eval-mode or otherwise averaged measurement is off
    # by far more
    ft = RunDir(str(si_sweep["finetune"]))
    ck = checkpoint.load(ft.final_ckpt)
    assert ck["batch_size"] == 128
    rows = {(r["member"], r["epoch"]): r for r in ft.metrics() if r["split"] == "train"}
    assert all("sharpness" in r for r in rows.values()) and {e for _, e in rows} == {0, 1, 2}
    for i, m in enumerate(ck["members"]):  # the last checkpoint: final.pt holds its weights
        model = build("convnet_si", 0, ck["model_args"])
        model.load_state_dict(checkpoint.member(ck["state"], i))
        expected = sharpness_by_hand(model, data["xn_train"], data["y_train"], 128)
        assert rows[(m["member"], 2)]["sharpness"] == pytest.approx(expected, rel=1e-5), m
    # the first evaluation (epoch 0) is at the parent's weights
    parent = checkpoint.load(str(si_sweep["pretrain"] / "checkpoints" / "final.pt"))
    model = build("convnet_si", 0, parent["model_args"])
    model.load_state_dict(checkpoint.member(parent["state"], 0))
    expected = sharpness_by_hand(model, data["xn_train"], data["y_train"], 128)
    assert rows[(0, 0)]["sharpness"] == pytest.approx(expected, rel=1e-5)


def test_at_loss_interpolates_between_the_crossing_checkpoints(geo):
    results, _ = geo
    assert results["at_loss_target"] == 6e-4
    rows = {(r["plr"], r["flr"]): r for r in results["at_loss"]}
    r0, r1 = rows[(TAGS["rows"], 1e-3)], rows[(TAGS["rows"], 1e-2)]
    assert r0["sharpness"] == pytest.approx(2.4, abs=1e-12) and r0["test_err"] == pytest.approx(0.12, abs=1e-12)
    assert r1["sharpness"] is None and r1["test_err"] is None  # already below the target at the first row
    assert r0["seed"] == 0 and r0["data_seed"] is None
