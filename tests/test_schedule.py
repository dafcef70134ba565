"""The recipe's --schedule (constant | cosine): the LR each optimizer step uses, the metrics rows'
lr_now, exact resume of a cosine run killed mid-way, inheritance by finetune.py (and SWA's constant
continuation), and the same schedule in the fused population backend."""
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, interrupt_at, run
from test_images_data import write_cifar
from engine import checkpoint
from engine.step import schedule_factor
from engine.rundir import RunDir

# 5 x 24 = 120 training images, 40 test images
SIZES = {**{f"data_batch_{i}": 24 for i in range(1, 6)}, "test_batch": 40}
CPU = ("--device", "cpu", "--threads", "1")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root, "cifar10", sizes=SIZES)
    return root


def tiny(cifar, *extra):
    return ["--dataset", "cifar10", "--data_dir", str(cifar), "--model", "convnet_si", "--width", "4", *CPU, *extra]


def cosine(lr0, t, total):
    return lr0 * 0.5 * (1 + math.cos(math.pi * t / total))


def test_schedule_factor():
    assert schedule_factor("constant", 5, 8) == 1.0
    assert schedule_factor("cosine", 0, 8) == 1.0  # the first step uses lr0
    assert schedule_factor("cosine", 4, 8) == pytest.approx(0.5, rel=1e-15)
    assert schedule_factor("cosine", 7, 8) == 0.5 * (1 + math.cos(math.pi * 7 / 8)) > 0


# train.py with TrainStep._body wrapped: it records the LR of the optimizer right before each step
RECORD = """
import json, runpy, sys
import engine.step as s
lrs, body = [], s.TrainStep._body
def _body(self, n):
    lrs.append(self.opt.param_groups[0]["lr"])
    return body(self, n)
s.TrainStep._body = _body
out, sys.argv = sys.argv[1], ["train.py"] + sys.argv[2:]
try:
    runpy.run_path("train.py", run_name="__main__")
finally:
    json.dump(lrs, open(out, "w"))
"""


def test_cosine_lr_each_step(cifar, tmp_path):
    # 120 images in batches of 32: 4 steps per epoch (the last of 24 images), 2 epochs: T = 8
    lr0_elr, total = 0.1, 8
    args = tiny(cifar, "--batch_size", "32", "--lr", str(lr0_elr), "--epochs", "2", "--eval_every", "1",
                "--schedule", "cosine", "--out", str(tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-c", RECORD, str(tmp_path / "lrs.json"), *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lrs = json.load(open(tmp_path / "lrs.json"))
    assert len(lrs) == total, lrs
    lr0 = lrs[0]  # the optimizer's lr0 (ELR x R^2 on the sphere)
    ckpt = checkpoint.load(str(tmp_path / "run" / "checkpoints" / "final.pt"))
    radius = ckpt["members"][0]["radius"]
    assert ckpt["recipe"]["schedule"] == "cosine"
    assert lr0 == pytest.approx(lr0_elr * radius ** 2, rel=1e-12)
    assert lrs[total // 2] == pytest.approx(lr0 / 2, rel=1e-12)  # the middle step: half the LR
    assert lrs[-1] == pytest.approx(cosine(lr0, total - 1, total), rel=1e-12)  # the last: > 0
    assert lrs == pytest.approx([cosine(lr0, t, total) for t in range(total)], rel=1e-12)
    # the metrics rows: lr (the ELR) unchanged, lr_now the ELR of the epoch's last step
    rows = [r for r in RunDir(str(tmp_path / "run")).metrics() if r["split"] == "train"]
    assert [r["lr"] for r in rows] == [lr0_elr] * 3
    assert [r["lr_now"] for r in rows] == pytest.approx(
        [lr0_elr, cosine(lr0_elr, 3, total), cosine(lr0_elr, 7, total)], rel=1e-12)


def test_cosine_epoch_rows(cifar, tmp_path):
    # one batch per epoch (128 >= 120 images): step t = epoch - 1, T = 4 epochs
    run("train.py", *tiny(cifar, "--batch_size", "128", "--lr", "0.2", "--epochs", "4", "--eval_every", "1",
                          "--schedule", "cosine", "--out", tmp_path / "run"))
    rows = {r["epoch"]: r["lr_now"] for r in RunDir(str(tmp_path / "run")).metrics() if r["split"] == "test"}
    assert rows[1] == pytest.approx(0.2, rel=1e-12)  # the first step at lr0
    assert rows[3] == pytest.approx(0.1, rel=1e-12)  # t = T/2: lr0 / 2
    assert rows[4] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 3 / 4)), rel=1e-12)


def test_constant_is_the_default(cifar, tmp_path):
    run("train.py", *tiny(cifar, "--batch_size", "32", "--lr", "0.1", "--epochs", "2", "--eval_every", "1",
                          "--out", tmp_path / "run"))
    assert checkpoint.load(str(tmp_path / "run" / "checkpoints" / "final.pt"))["recipe"]["schedule"] == "constant"
    assert {r["lr_now"] for r in RunDir(str(tmp_path / "run")).metrics()} == {0.1}


@pytest.mark.e2e
def test_cosine_killed_resumes_bitwise(cifar, tmp_path):
    epochs, at = 12, 3
    args = tiny(cifar, "--batch_size", "8", "--lr", "1e-2", "3e-1", "--epochs", str(epochs), "--schedule", "cosine")
    run("train.py", *args, "--out", tmp_path / "ref")
    returncode, out = interrupt_at("train.py", *args, "--out", tmp_path / "cut", sig=signal.SIGKILL,
                                   moment=rf"epoch +{at}/{epochs} \|")
    assert returncode == -signal.SIGKILL and not RunDir(str(tmp_path / "cut")).is_complete(), out[-3000:]
    resumed = run("train.py", *args, "--out", tmp_path / "cut")
    assert "resuming" in resumed.stdout
    ref, cut = (checkpoint.load(str(tmp_path / r / "checkpoints" / "final.pt")) for r in ("ref", "cut"))
    assert all(torch.equal(ref["state"][k], cut["state"][k]) for k in ref["state"])
    assert [[g["lr"] for g in o["param_groups"]] for o in ref["opts"]] == \
        [[g["lr"] for g in o["param_groups"]] for o in cut["opts"]]
    assert RunDir(str(tmp_path / "ref")).metrics() == RunDir(str(tmp_path / "cut")).metrics()


@pytest.mark.e2e
def test_cosine_resumes_mid_epoch_bitwise(cifar, tmp_path):
    # SIGTERM is honoured between batches: the resume starts inside an epoch, from `pos`
    epochs, at = 12, 2
    args = tiny(cifar, "--batch_size", "8", "--lr", "3e-1", "--epochs", str(epochs), "--schedule", "cosine")
    run("train.py", *args, "--out", tmp_path / "ref")
    returncode, out = interrupt_at("train.py", *args, "--out", tmp_path / "cut", sig=signal.SIGTERM,
                                   moment=rf"epoch +{at}/{epochs} \|")
    assert returncode == 143, out[-3000:]
    assert checkpoint.load(str(tmp_path / "cut" / "checkpoints" / "last.pt"))["pos"] is not None
    run("train.py", *args, "--out", tmp_path / "cut")
    ref, cut = (checkpoint.load(str(tmp_path / r / "checkpoints" / "final.pt")) for r in ("ref", "cut"))
    assert all(torch.equal(ref["state"][k], cut["state"][k]) for k in ref["state"])
    assert RunDir(str(tmp_path / "ref")).metrics() == RunDir(str(tmp_path / "cut")).metrics()


def test_finetune_inherits_cosine_swa_keeps_constant(cifar, tmp_path):
    run("train.py", *tiny(cifar, "--batch_size", "128", "--lr", "0.2", "--epochs", "2", "--schedule", "cosine",
                          "--out", tmp_path / "pt"))
    run("finetune.py", "--from", tmp_path / "pt", "--lr", "0.01", "--epochs", "4", "--eval_every", "1", *CPU,
        "--out", tmp_path / "ft")
    ft = checkpoint.load(str(tmp_path / "ft" / "checkpoints" / "final.pt"))
    assert ft["recipe"]["schedule"] == "cosine"
    rows = {r["epoch"]: r["lr_now"] for r in RunDir(str(tmp_path / "ft")).metrics() if r["split"] == "test"}
    assert rows[1] == pytest.approx(0.01, rel=1e-12) and rows[3] == pytest.approx(0.005, rel=1e-12)
    # --schedule constant on top of the parent's cosine
    run("finetune.py", "--from", tmp_path / "pt", "--lr", "0.01", "--epochs", "2", "--schedule", "constant", *CPU,
        "--out", tmp_path / "ft_const")
    assert {r["lr_now"] for r in RunDir(str(tmp_path / "ft_const")).metrics()} == {0.01}
    # SWA continues the cosine parent at its constant PLR
    run("swa.py", "--from", tmp_path / "pt", "--n_models", "3", *CPU, "--out", tmp_path / "swa")
    assert {r["lr_now"] for r in RunDir(str(tmp_path / "swa")).metrics()} == {0.2}


def test_population_cosine_steps_and_rows(tmp_path):
    """The fused backend: a (K, M) LR per step inside one block is K single steps at those LRs, bit for
    bit, and a cosine run's rows carry lr_now = lr0 x the factor of its last step."""
    from engine.checkpoint import stack as stack_states
    from models import build
    from models.mlp import MLPPopulation, from_state_dict
    torch.manual_seed(0)
    w = from_state_dict(stack_states([build("mlp_si", s, dict(num_classes=2, in_channels=32, width=8)).state_dict()
                                      for s in (0, 1)]))
    stack = lambda: [w[k] for k in ("w1", "w2", "w3")]  # noqa: E731
    x, y = torch.randn(2, 6, 4, 32), (torch.rand(2, 6, 4) > 0.5).float()
    lrs = torch.tensor([[0.3, 0.01]]) * torch.tensor([1.0, 0.8, 0.5, 0.2, 0.05, 0.01]).view(6, 1)  # (K, M)
    block, steps = MLPPopulation(*stack(), groups=2), MLPPopulation(*stack(), groups=2)
    block.sgd_steps(x, y, lrs, 1.0)
    for k in range(6):
        steps.sgd_steps(x[:, k:k + 1], y[:, k:k + 1], lrs[k], 1.0)
    assert all(torch.equal(a, b) for a, b in zip(block.state().values(), steps.state().values()))
    const = MLPPopulation(*stack(), groups=2)
    const.sgd_steps(x, y, lrs[0], 1.0)  # a constant LR is another trajectory: the schedule is used
    assert not torch.equal(const.state()["w1"], block.state()["w1"])

    total = 120
    run("train.py", "--smoke", "--threads", "1", "--lr", "0.2", "--iters", str(total), "--eval_every", "30",
        "--schedule", "cosine", "--out", tmp_path / "pop")
    rows = {r["step"]: r["lr_now"] for r in RunDir(str(tmp_path / "pop")).metrics() if r["split"] == "test"}
    assert rows[0] == 0.2 and rows[60] == pytest.approx(cosine(0.2, 59, total), rel=1e-12)
    assert rows[total] == pytest.approx(cosine(0.2, total - 1, total), rel=1e-12) and rows[total] > 0
    # the steps themselves follow the schedule: the same run at a constant LR ends elsewhere
    run("train.py", "--smoke", "--threads", "1", "--lr", "0.2", "--iters", str(total), "--eval_every", "30",
        "--out", tmp_path / "const")
    cos, const = (checkpoint.load(str(tmp_path / d / "checkpoints" / "final.pt"))["state"] for d in ("pop", "const"))
    assert not torch.equal(cos["fc1.weight"], const["fc1.weight"])


@pytest.mark.e2e
def test_population_cosine_killed_resumes_bitwise(tmp_path):
    iters, args = 3000, ("--lr", "1e-2", "0.3", "--seed", "0", "--iters", "3000", "--checkpoint_every", "40",
                         "--schedule", "cosine", "--smoke", "--threads", "1")
    run("train.py", *args, "--out", tmp_path / "ref")
    returncode, out = interrupt_at("train.py", *args, "--out", tmp_path / "cut", sig=signal.SIGKILL,
                                   moment=rf"step +100/{iters} \|")
    assert returncode == -signal.SIGKILL, out[-3000:]
    assert "resuming" in run("train.py", *args, "--out", tmp_path / "cut").stdout
    ref, cut = (checkpoint.load(str(tmp_path / d / "checkpoints" / "final.pt"))["state"] for d in ("ref", "cut"))
    assert all(torch.equal(ref[k], cut[k]) for k in ref)
    assert RunDir(str(tmp_path / "ref")).metrics() == RunDir(str(tmp_path / "cut")).metrics()
