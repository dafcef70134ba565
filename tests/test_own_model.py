"""A researcher's own model class and data, from files outside the repository, through every stage;
the recipe as flags and its inheritance; one checkpoint layout for both training backends."""
import json
import textwrap

import numpy as np
import pytest
import torch

from conftest import run
from models import build, resolve
from models.mlp import MLPPopulation, SIMLP, from_state_dict
from engine import checkpoint
from engine.rundir import RunDir

MODELS_PY = textwrap.dedent('''
    import torch
    from torch import nn


    class SICNN(nn.Module):
        """Scale-invariant: convs without bias, BN without affine, a frozen head."""
        scale_invariant = True

        def __init__(self, num_classes, in_channels, width=4):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width, affine=False),
                nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width, affine=False),
                nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(2 * width, num_classes)
            self.head.requires_grad_(False)

        def forward(self, x):
            return self.head(self.body(x))


    class Practical(nn.Module):
        """Biases, affine BN, a trainable head: no scale_invariant attribute, the practical recipe."""

        def __init__(self, num_classes, in_channels, width=4):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.body(x))


    class ClaimsButBiased(SICNN):
        """Claims invariance, but its head's bias trains."""
        scale_invariant = True

        def __init__(self, num_classes, in_channels, width=4):
            super().__init__(num_classes, in_channels, width)
            self.head.bias.requires_grad_(True)


    class BiasBeforeNorm(SICNN):
        """Scale-invariant all the same: each conv's bias scales with its weight and the norm removes both."""
        scale_invariant = True

        def __init__(self, num_classes, in_channels, width=4):
            super().__init__(num_classes, in_channels, width)
            self.body[0] = nn.Conv2d(in_channels, width, 3, padding=1, bias=True)


    class Raises(nn.Module):
        def __init__(self, num_classes, in_channels):
            raise RuntimeError("no GPU, no model")


    class NotAModule:
        pass


    class Flat(nn.Module):
        """Takes only 16x16 images: a Linear on the flattened input."""
        def __init__(self, num_classes, in_channels):
            super().__init__()
            self.fc = nn.Linear(in_channels * 16 * 16, num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1))
''')


def write_npz(path, n_train=96, n_test=48, size=(12, 12), classes=3, seed=0):
    """Tiny colour images (N, H, W, 3) whose class sets the mean of one channel: learnable quickly."""
    g = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        x = g.integers(0, 120, (n, *size, 3))
        x[..., 0] += (60 * y)[:, None, None]
        out[f"x_{split}"], out[f"y_{split}"] = x.astype(np.uint8), y.astype(np.int64)
    np.savez(path, **out)
    return path


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A folder outside the repository with the model file and the data file."""
    root = tmp_path_factory.mktemp("elsewhere")
    (root / "my_models.py").write_text(MODELS_PY)
    write_npz(root / "my_data.npz")
    return root


def tiny(own, cls, out, *extra):
    return run("train.py", "--model", f"{own}/my_models.py:{cls}", "--dataset", own / "my_data.npz",
               "--batch_size", "32", "--threads", "1", "--out", out, *extra)


@pytest.mark.e2e
@pytest.mark.parametrize("cls, sphere", [("SICNN", True), ("Practical", False)])
def test_own_model_through_the_whole_chain(own, tmp_path, cls, sphere):
    root = tmp_path / "mine"
    common = ("--threads", "1")
    for plr in ("1e-3", "1e-1"):
        tiny(own, cls, root / "pretrain" / plr, "--lr", plr, "--seed", "0", "1", "--epochs", "2")
        run("finetune.py", "--from", root / "pretrain" / plr, "--lr", "1e-4", "1e-3", "--epochs", "2", *common,
            "--out", root / "finetune" / plr)
        run("swa.py", "--from", root / "pretrain" / plr, "--n_models", "3", *common, "--out", root / "swa" / plr)
        for stage in ("pretrain", "finetune", "swa"):
            run("eval_fourier.py", "--run", root / stage / plr, "--bands", "0,1-4,5-12", *common)
        run("eval_geometry.py", "--finetune", root / "finetune" / plr, "--swa", root / "swa" / plr, "--points", "3",
            *common, "--out", root / "geometry" / plr)
    run("report.py", "--root", root)
    summary = json.loads((root / "summary.json").read_text())
    assert summary["model"].endswith(f"my_models.py:{cls}") and summary["dataset"].endswith("my_data.npz")
    assert [e["plr"] for e in summary["per_plr"]] == [1e-3, 1e-1]
    assert all(e["regime"] in ("1", "2", "2A", "2B", "3") for e in summary["per_plr"])
    e = summary["per_plr"][0]
    assert set(e["pretrain"]["bands"]) == {"0", "1-4", "5-12"} and e["swa"]["test_acc"] is not None
    assert e["geometry"]["test_barrier_low_high"] >= 0 and sorted(e["finetune"]) == ["0.0001", "0.001"]
    config = RunDir(str(root / "pretrain" / "1e-3")).config()
    assert config["meta"]["chance"] == pytest.approx(1 / 3)  # 3 classes in the data
    assert config["meta"]["recipe"]["sphere"] == ("on" if sphere else "off")
    for stage in ("pretrain/1e-3", "finetune/1e-1"):  # on the sphere, every logged norm is the member's radius
        rd = RunDir(str(root / stage))
        radius = {m["member"]: m["radius"] for m in rd.members()}
        if sphere:
            assert all(r["weight_norm"] == pytest.approx(radius[r["member"]], rel=1e-5) for r in rd.metrics())
        else:
            assert all(v is None for v in radius.values())
    # the frozen head of the SI model never moved; the practical head trained
    ck = checkpoint.load(str(root / "finetune" / "1e-1" / "checkpoints" / "final.pt"))
    init = build(resolve(ck["model"]), 0, ck["model_args"]).state_dict()
    assert torch.equal(ck["state"]["head.weight"][0], init["head.weight"]) == sphere


@pytest.mark.e2e
def test_own_model_sweep_with_run_all(own, tmp_path):
    proc = run("bash", "run_all.sh", "--setup", "mine", "--model", own / "my_models.py:SICNN", "--dataset",
               own / "my_data.npz", "--model_args", "width=3", "--plrs", "1e-3 1e-2 0.1", "--flrs", "1e-4 1e-3",
               "--epochs", "2", "--ft_epochs", "2", "--seeds", "0 1", "--jobs", "2", "--measure", "--out", tmp_path)
    assert "sweep mine/quick finished" in proc.stdout
    summary = json.loads((tmp_path / "mine" / "summary.json").read_text())
    assert [e["plr"] for e in summary["per_plr"]] == [1e-3, 1e-2, 0.1]
    assert all(e["regime"] in ("1", "2", "2A", "2B", "3") and e["pretrain"]["n_seeds"] == 2
               for e in summary["per_plr"])
    assert all(e["geometry"] is not None and e["swa"] is not None for e in summary["per_plr"])
    config = RunDir(str(tmp_path / "mine" / "pretrain" / "plr1e-2_s1")).config()
    assert config["meta"]["model_args"]["width"] == 3
    dry = run("bash", "run_all.sh", "--setup", "mine", "--model", own / "my_models.py:SICNN", "--dataset",
              own / "my_data.npz", "--dry_run")
    assert f"--model {own}/my_models.py:SICNN" in dry.stdout


def test_a_false_scale_invariance_claim_is_refused(own, tmp_path):
    proc = run("train.py", "--model", f"{own}/my_models.py:ClaimsButBiased", "--dataset", own / "my_data.npz",
               "--lr", "1e-3", "--epochs", "1", "--out", tmp_path / "run", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "head.bias" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()
    # the practical recipe does not claim anything: the same class trains off the sphere
    run("train.py", "--model", f"{own}/my_models.py:ClaimsButBiased", "--dataset", own / "my_data.npz",
        "--lr", "1e-3", "--epochs", "1", "--sphere", "off", "--threads", "1", "--out", tmp_path / "off")


def test_a_true_claim_with_a_bias_trains_on_the_sphere(own, tmp_path):
    """A trainable bias before a norm without affine keeps the model scale-invariant: the numbers
    decide, not the parameter's shape."""
    tiny(own, "BiasBeforeNorm", tmp_path / "run", "--lr", "1e-2", "--epochs", "2")
    rd = RunDir(str(tmp_path / "run"))
    radius = rd.members()[0]["radius"]
    assert all(r["weight_norm"] == pytest.approx(radius, rel=1e-5) for r in rd.metrics())
    state = checkpoint.load(str(tmp_path / "run" / "checkpoints" / "final.pt"))["state"]
    init = build(resolve(f"{own}/my_models.py:BiasBeforeNorm"), 0, num_classes=3, in_channels=3).state_dict()
    assert not torch.equal(state["body.0.bias"][0], init["body.0.bias"])  # the bias trained


def test_recipe_is_recorded_and_inherited(own, tmp_path):
    tiny(own, "Practical", tmp_path / "pt", "--lr", "1e-3", "--epochs", "1", "--optimizer", "adam",
         "--weight_decay", "1e-4", "--augment", "none")
    ck = checkpoint.load(str(tmp_path / "pt" / "checkpoints" / "final.pt"))
    assert ck["recipe"] == {"optimizer": "adam", "momentum": 0.0, "weight_decay": 1e-4, "augment": "none",
                            "sphere": "off", "schedule": "constant"}
    assert "exp_avg" in ck["opts"][0]["state"][0]  # Adam's state, checkpointed
    run("finetune.py", "--from", tmp_path / "pt", "--lr", "1e-4", "--epochs", "1", "--threads", "1",
        "--out", tmp_path / "ft")
    assert checkpoint.load(str(tmp_path / "ft" / "checkpoints" / "final.pt"))["recipe"] == ck["recipe"]
    run("finetune.py", "--from", tmp_path / "pt", "--lr", "1e-4", "--epochs", "1", "--threads", "1",
        "--optimizer", "sgd", "--momentum", "0.9", "--out", tmp_path / "ft_sgd")
    sgd = checkpoint.load(str(tmp_path / "ft_sgd" / "checkpoints" / "final.pt"))
    assert sgd["recipe"] == dict(ck["recipe"], optimizer="sgd", momentum=0.9)
    assert "momentum_buffer" in sgd["opts"][0]["state"][0]
    assert RunDir(str(tmp_path / "ft_sgd")).config()["meta"]["recipe"]["optimizer"] == "sgd"


def test_checkpoint_layout_of_the_population_backend(tmp_path):
    run("train.py", "--smoke", "--lr", "1e-3", "3e-2", "--seed", "0", "1", "--data_seed", "2", "--iters", "60",
        "--threads", "1", "--out", tmp_path / "pop")
    ck = checkpoint.load(str(tmp_path / "pop" / "checkpoints" / "final.pt"))
    net = build(resolve(ck["model"]), 0, ck["model_args"])
    assert isinstance(net, SIMLP) and set(ck["state"]) == set(net.state_dict())
    assert all(v.shape == (4, *net.state_dict()[k].shape) for k, v in ck["state"].items())
    # member 3 loaded into one SIMLP computes what the population computes for it
    net.load_state_dict(checkpoint.member(ck["state"], 3))
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    w = from_state_dict(ck["state"])
    pop = MLPPopulation(w["w1"], w["w2"], w["w3"], groups=2)
    torch.testing.assert_close(pop.logits(x)[1, 1], net(x[1]), rtol=1e-5, atol=1e-5)
    assert ck["kept"] == [10 * k for k in range(2, 7)]
    last = checkpoint.load(RunDir(str(tmp_path / "pop")).kept_ckpt("step", 60))["state"]
    assert set(last) == set(ck["state"]) and torch.equal(last["fc1.weight"], ck["state"]["fc1.weight"])


def test_checkpoint_layout_of_the_module_backend(own, tmp_path):
    tiny(own, "SICNN", tmp_path / "img", "--lr", "1e-3", "1e-2", "--epochs", "1")
    ck = checkpoint.load(str(tmp_path / "img" / "checkpoints" / "final.pt"))
    net = build(resolve(ck["model"]), 0, ck["model_args"])
    assert set(ck["state"]) == set(net.state_dict()) and ck["state"]["body.0.weight"].shape[0] == 2
    net.load_state_dict(checkpoint.member(ck["state"], 1))  # strict: the keys and shapes of the class
    assert not torch.equal(ck["state"]["body.0.weight"][0], ck["state"]["body.0.weight"][1])  # two LRs, two results


def test_checkpoint_of_an_earlier_version_is_one_line(tmp_path):
    run("train.py", "--smoke", "--lr", "1e-3", "--threads", "1", "--out", tmp_path / "pt")
    path = tmp_path / "pt" / "checkpoints" / "final.pt"
    torch.save(dict(torch.load(path, weights_only=True), format="lrl-checkpoint-v1"), path)
    proc = run("finetune.py", "--from", tmp_path / "pt", "--lr", "1e-3", "--out", tmp_path / "ft", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "earlier version" in lines[0], proc.stderr
    assert not (tmp_path / "ft").exists()
