"""bench/range_test.py: the libraries' suggestion rules on constructed loss curves whose answer is
known, and the range tests end to end on tiny setups (the synthetic SI MLP, tiny CIFAR files):
the ramps, the units (ELR = lr / R^2), determinism, the initial weights restored, the sphere held."""
import importlib.util
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("torch_lr_finder")
pytest.importorskip("pytorch_lightning")
from pytorch_lightning.tuner.lr_finder import _LRFinder  # noqa: E402
from torch_lr_finder import LRFinder  # noqa: E402

from conftest import ROOT, run  # noqa: E402
from models import build  # noqa: E402
from test_images_data import write_cifar  # noqa: E402
from engine.sphere import ProjectedSGD, si_norm  # noqa: E402

spec = importlib.util.spec_from_file_location("range_test", ROOT / "bench" / "range_test.py")
rt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rt)

N = 100
# the ramps as the libraries take them (their code, read for these tests):
# torch-lr-finder: step i at start * (end / start)^(i / (N - 1)), i = 0 .. N-1
TLF_LRS = [1e-7 * (10 / 1e-7) ** (i / (N - 1)) for i in range(N)]
# Lightning: step 0 at min_lr, step i >= 1 at min * (max / min)^((i + 1) / N) (its scheduler's
# get_lr uses last_epoch + 1 and returns base_lr at last_epoch 0, so the ratio q^1 is skipped)
PL_LRS = [1e-8] + [1e-8 * (1.0 / 1e-8) ** ((i + 1) / N) for i in range(1, N)]


def step_curve(n=N, at=40, spike=None, nan=None):
    """Loss 2 up to index `at`, 1 after: one drop between `at` and `at` + 1; optional spike (loss
    50 at that index) and NaN."""
    loss = [2.0 if i <= at else 1.0 for i in range(n)]
    if spike is not None:
        loss[spike] = 50.0
    if nan is not None:
        loss[nan] = float("nan")
    return loss


def tlf(lrs, losses):
    """An LRFinder holding this history, as range_test leaves it."""
    net = torch.nn.Linear(1, 1)
    finder = LRFinder(net, torch.optim.SGD(net.parameters(), lr=1e-7), torch.nn.MSELoss())
    finder.history = {"lr": list(lrs), "loss": list(losses)}
    return finder


def tlf_suggest(lrs, losses):
    _, lr = tlf(lrs, losses).plot(skip_start=10, skip_end=5, suggest_lr=True, ax=rt.agg_axes())
    return lr


def pl_suggest(lrs, losses):
    finder = _LRFinder("exponential", 1e-8, 1.0, N)
    finder.results = {"lr": list(lrs), "loss": list(losses)}
    return finder.suggestion()  # skip_begin=10, skip_end=1


# ---------------------------------------------------------------- the suggestion rules

def test_torch_lr_finder_rule(capsys):
    """argmin of np.gradient (central differences over the index) of loss[10:-5]."""
    smooth = [2 - math.tanh((i - 40) / 3) for i in range(N)]  # steepest at index 40, symmetric
    assert tlf_suggest(TLF_LRS, smooth) == TLF_LRS[40]
    # a single drop between 40 and 41: equal central differences at 40 and 41, argmin takes the first
    assert tlf_suggest(TLF_LRS, step_curve()) == TLF_LRS[40]
    # a spike (then a steep fall) among the first 10 points, or a drop in the last 5: skipped, not seen
    early = [50.0 if i == 3 else v for i, v in enumerate(smooth)]
    late = [v - (10 if i >= 97 else 0) for i, v in enumerate(smooth)]
    assert tlf_suggest(TLF_LRS, early) == tlf_suggest(TLF_LRS, late) == TLF_LRS[40]
    # ... but a spike just after them fools it (Lightning #1767 for the same rule): the fall after it
    assert tlf_suggest(TLF_LRS, step_curve(spike=12)) == TLF_LRS[13]
    # not in the libraries' documentation: a NaN loss (a diverged step the 5x rule missed) is not dropped; np.argmin
    # returns the first NaN of the gradient, i.e. the LR just before the NaN
    assert tlf_suggest(TLF_LRS, step_curve(nan=60)) == TLF_LRS[59]
    # too few points (< skip_start + skip_end + 2 = 17): the library raises, range_test says None
    assert rt.tlf_suggestion(tlf(TLF_LRS[:16], step_curve(16, at=10))) is None
    assert rt.tlf_suggestion(tlf(TLF_LRS[:17], step_curve(17, at=10))) == TLF_LRS[10]  # 2 points kept
    capsys.readouterr()  # its prints


def test_lightning_rule():
    """argmin of torch.gradient(loss, spacing=lr), i.e. d loss / d lr at the LR values (not over the
    index as docs/protocol.md section 9 reads), of loss[10:-1], non-finite losses dropped first."""
    # one drop between 40 and 41: with h = lr[41] - lr[40] and ratio q between LRs, the non-uniform
    # central difference is -1 / (h (1 + q)) at 40 and -q / (h (1 + q)) at 41: the later point
    assert pl_suggest(PL_LRS, step_curve()) == PL_LRS[41]
    assert pl_suggest(PL_LRS, step_curve(spike=3)) == PL_LRS[41]  # a spike among the skipped 10
    assert pl_suggest(PL_LRS, step_curve(spike=12)) == PL_LRS[13]  # one just after: fooled (#1767)
    assert pl_suggest(PL_LRS, step_curve(nan=60)) == PL_LRS[41]  # NaN losses dropped
    # the slope per unit LR favours small LRs (#21141): on the smooth curve whose steepest descent
    # over the index is at 40 (where torch-lr-finder's rule picks it), it picks an earlier point,
    # the one numpy's non-uniform gradient (an independent implementation of the same rule) gives
    smooth = [2 - math.tanh((i - 40) / 3) for i in range(N)]
    expect = 10 + int(np.argmin(np.gradient(np.array(smooth[10:-1]), np.array(PL_LRS[10:-1]))))
    assert expect < 40 and pl_suggest(PL_LRS, smooth) == pytest.approx(PL_LRS[expect], rel=1e-12)
    # fewer than 2 points left after skipping: no suggestion
    assert pl_suggest(PL_LRS[:12], step_curve(12, at=5)) is None
    assert pl_suggest(PL_LRS[:13], step_curve(13, at=10)) == PL_LRS[10]  # 2 points: equal slopes, the first


# ---------------------------------------------------------------- end to end

SIZES = {**{f"data_batch_{i}": 24 for i in range(1, 6)}, "test_batch": 40}  # 120 training images
TICK = ["--dataset", "tick", "--model", "mlp_si", "--smoke"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root, "cifar10", sizes=SIZES)
    return ["--dataset", "cifar10", "--data_dir", str(root), "--model", "convnet_si", "--smoke"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread here (small models; faster on shared cores), the session's setting restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def results(cifar):
    return {"tick": (rt.range_tests(TICK, seed=0, data_seed=0), 1.0),
            # radius: the SI weights' norm at initialisation (train.py's rule for image SI models)
            "cifar": (rt.range_tests(cifar, seed=0), si_norm(build("convnet_si", 0, {"width": 4, "num_classes": 10,
                                                                                    "in_channels": 3})))}


@pytest.mark.parametrize("name", ["tick", "cifar"])
def test_end_to_end(results, name):
    out, radius = results[name]
    assert set(out) == {"torch_lr_finder", "lightning"}
    for m, r in out.items():
        assert r["radius"] == pytest.approx(radius, rel=1e-12)
        assert r["lr"] is None or (math.isfinite(r["lr"]) and r["lr"] > 0), m
        if r["lr"] is not None:
            assert r["elr"] == pytest.approx(r["lr"] / radius ** 2, rel=1e-12)
            assert r["lr"] in r["curve"]["lr"]
        assert r["steps"] <= N and r["steps"] == len(r["curve"]["lr"]) == len(r["curve"]["loss"]) >= 17
        ramp = TLF_LRS if m == "torch_lr_finder" else PL_LRS
        np.testing.assert_allclose(r["curve"]["lr"], ramp[:r["steps"]], rtol=1e-9)
        assert r["rule"]
    # both start from the same model on the same first batch: Lightning's first point is that loss
    # smoothed as its callback does it, 0.02 L / (1 - 0.98^2) ~ 0.505 L (its bias correction counts
    # the optimizer step already taken), torch-lr-finder's the loss itself
    first = out["torch_lr_finder"]["curve"]["loss"][0]
    assert out["lightning"]["curve"]["loss"][0] == pytest.approx(first * 0.02 / (1 - 0.98 ** 2), rel=1e-5)


def test_same_seed_same_suggestion(results):
    again = rt.range_tests(TICK, seed=0, data_seed=0)
    for m, r in results["tick"][0].items():
        assert again[m]["lr"] == r["lr"] and again[m]["curve"] == r["curve"], m
    other = rt.range_tests(TICK, seed=1, data_seed=0, methods=("torch_lr_finder",))
    assert other["torch_lr_finder"]["curve"] != results["tick"][0]["torch_lr_finder"]["curve"]


@pytest.mark.parametrize("method", ["torch_lr_finder", "lightning"])
def test_weights_restored_and_on_the_sphere(cifar, method):
    """The libraries restore the model afterwards; during the test the projected optimizer keeps
    the SI weights on the sphere of the run's radius after every step; Lightning leaves no file."""
    s = rt.setup(cifar, seed=0)
    model, norms, made = s["model"](), [], []
    before = {k: v.clone() for k, v in model.state_dict().items()}
    make = s["optimizer"]

    def optimizer(params, lr):
        opt = make(params, lr)
        opt.register_step_post_hook(lambda *_: norms.append(si_norm(model)))
        made.append(opt)
        return opt
    s["optimizer"] = optimizer
    listing = sorted(p.name for p in ROOT.iterdir())
    rt.METHODS[method](s, model, "cpu")
    assert sorted(p.name for p in ROOT.iterdir()) == listing  # no .lr_find_*.ckpt left behind
    assert all(isinstance(o, ProjectedSGD) and o.radius == s["radius"] for o in made) and made
    assert len(norms) == N and norms == pytest.approx([s["radius"]] * N, rel=1e-6)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the initial weights were changed"


def test_augmented_batches(cifar):
    """The practical recipe's crop + flip is applied per batch (uint8 gathered, augmented, normalised)
    and off the sphere lr is ELR; the same seed gives the same batches."""
    flags = [f if f != "convnet_si" else "resnet18" for f in cifar]
    s = rt.setup(flags, seed=0)
    assert s["radius"] is None
    (x, y), (x2, y2) = next(iter(s["loader"]())), next(iter(s["loader"]()))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and torch.equal(x, x2) and torch.equal(y, y2)
    plain = rt.setup(cifar, seed=0)
    xp, yp = next(iter(plain["loader"]()))
    assert torch.equal(yp, y)  # the same shuffle
    assert not torch.equal(xp, x)  # but augmented


@pytest.mark.e2e
def test_cli(tmp_path):
    out = tmp_path / "rt.json"
    proc = run("bench/range_test.py", "--seed", "0", "--methods", "torch_lr_finder", "--threads", "1", "--out", out,
               "--", *TICK)
    r = json.loads(out.read_text())["torch_lr_finder"]
    assert proc.stdout.startswith(f"torch_lr_finder  ELR {r['elr']:.3g} (R = 1, lr {r['lr']:.3g}), 100 steps")
    assert not proc.stderr  # the libraries' progress bars and messages are silenced


@pytest.mark.e2e
def test_bad_input(cifar):
    with pytest.raises(rt.UserError, match="--lr"):
        rt.setup(TICK + ["--lr", "0.1"], seed=0)
    with pytest.raises(rt.UserError, match="--data_seed"):
        rt.setup(cifar, seed=0, data_seed=0)
    with pytest.raises(rt.UserError, match="fastai"):
        rt.range_tests(TICK, seed=0, methods=("fastai",))
    proc = run("bench/range_test.py", "--seed", "0", "--dataset", "tick", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "after --" in proc.stderr
