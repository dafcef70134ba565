"""Image runs end to end on tiny CIFAR files written in torchvision's format: the chain train ->
finetune -> swa for every model, the sphere after every step, the frozen head, SWA against the
mean of the checkpoints it averages, and BN statistics against a manual recomputation."""
import argparse
import random
import signal

import pytest
import torch

from conftest import interrupt_at, run
from test_images_data import write_cifar
from models import build
from engine import checkpoint
from data.images import epoch_draws
from models import MODELS
from engine.module import bn_batches, optimizer, read_data as load_data
from engine.step import TrainStep, epoch_generator, speed_setup, speed_switches, train_epoch, use_bf16
from engine.rundir import RunDir
from engine.sphere import make_optimizer, project_, recompute_bn_stats, si_norm, si_parameters

# 5 x 24 training and 40 test images: enough for batches of 32 and a partial last batch (8)
SIZES = {**{f"data_batch_{i}": 24 for i in range(1, 6)}, "test_batch": 40}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar(root, "cifar10", sizes=SIZES)
    return root


def tiny(model, data_dir, out, *extra):
    return run("train.py", "--dataset", "cifar10", "--data_dir", data_dir, "--model", model, "--width", "4",
               "--batch_size", "32", "--threads", "1", "--out", out, *extra)


# Bitwise comparisons between processes run on the CPU: on CUDA, cuDNN's deterministic algorithms
# are asked for (engine/args.py) but equality across processes has not been established there.
CPU = ("--device", "cpu")


def states(path):
    """The members' state_dicts of a checkpoint (stored as one stacked state_dict)."""
    ckpt = checkpoint.load(str(path))
    return [checkpoint.member(ckpt["state"], i) for i in range(len(ckpt["members"]))]


@pytest.mark.parametrize("model", ["convnet_si", pytest.param("resnet18_si", marks=pytest.mark.e2e),
                                   pytest.param("resnet18", marks=pytest.mark.e2e)])
def test_chain_train_finetune_swa(cifar, tmp_path, model):
    si = model != "resnet18"
    tiny(model, cifar, tmp_path / "pt", "--lr", "1e-3", "5e-2", "--seed", "0", "--epochs", "2")
    run("finetune.py", "--from", tmp_path / "pt", "--lr", "1e-4", "--epochs", "2", "--threads", "1",
        "--out", tmp_path / "ft")
    run("swa.py", "--from", tmp_path / "pt", "--n_models", "3", "--threads", "1", "--out", tmp_path / "swa")
    net = build(model, 0, width=4, num_classes=10, in_channels=3)
    head = {n: p.detach() for n, p in net.named_parameters() if any(p is q for q in net.head.parameters())}
    for stage, n in (("pt", 2), ("ft", 2), ("swa", 2)):
        rd = RunDir(str(tmp_path / stage))
        assert rd.is_complete() and len(rd.results()["members"]) == n
        rows = rd.metrics()
        tests = [r for r in rows if r["split"] == "test"]
        assert tests and all(0 <= r["acc"] <= 1 and r["weight_norm"] > 0 for r in tests)
        final = states(tmp_path / stage / "checkpoints" / "final.pt")
        for m, state in zip(rd.members(), final):
            for k, v in head.items():  # the SI head is frozen: bit for bit; the practical one trains
                assert torch.equal(state[k], v) == si, (stage, k)
            if si:  # every logged norm is the member's radius (SWA averages are not re-projected)
                assert all(abs(r["weight_norm"] - m["radius"]) < 1e-4 * m["radius"]
                           for r in rows if r["member"] == m["member"] and not r.get("swa"))
    assert [r["epoch"] for r in RunDir(str(tmp_path / "ft")).metrics() if r["member"] == 0] == [0] * 3 + [1] * 3 + [2] * 3
    members = RunDir(str(tmp_path / "ft")).members()
    assert [(m["plr"], m["flr"], m["parent_member"]) for m in members] == [(1e-3, 1e-4, 0), (5e-2, 1e-4, 1)]


def test_radius_holds_after_every_step(cifar):
    data = load_data("cifar10", cifar, False, None, None, torch.device("cpu"))
    model = build("resnet18_si", 1, width=4, num_classes=10, in_channels=3)
    radius = 3.0
    project_(model, radius)
    opt = make_optimizer(si_parameters(model), "sgd", 0.5 * radius ** 2, radius=radius)
    norms = []
    model.register_forward_pre_hook(lambda mod, inp: norms.append(si_norm(mod)))
    perm = torch.randperm(len(data["y_train"]), generator=epoch_generator(0, 1, 1))
    sums = torch.zeros(3, dtype=torch.float64)
    step = TrainStep(model, opt, data, 16, aug=False, device=torch.device("cpu"))
    done = train_epoch(step, perm, None, 0, sums, None)
    norms.append(si_norm(model))
    assert done == 8 and len(norms) == 9 and sums[2].item() == 120
    assert max(abs(n - radius) for n in norms) < 1e-5
    # the steps did move the weights (a large ELR), so the projection had work to do
    fresh = build("resnet18_si", 1, width=4, num_classes=10, in_channels=3)
    project_(fresh, radius)
    assert not torch.allclose(fresh.stem.weight, model.stem.weight, atol=1e-3)


def test_swa_is_the_mean_of_the_window_with_recomputed_bn(cifar, tmp_path):
    # SWA-3 from a 1-epoch run averages epochs 1, 2, 3: the checkpoints a 3-epoch run keeps
    common = ("--lr", "2e-2", "--seed", "3", *CPU)
    tiny("convnet_si", cifar, tmp_path / "long", *common, "--epochs", "3", "--save_epochs", "1", "2", "3")
    tiny("convnet_si", cifar, tmp_path / "short", *common, "--epochs", "1")
    run("swa.py", "--from", tmp_path / "short", "--n_models", "3", "--keep_window", "--threads", "1", *CPU,
        "--out", tmp_path / "swa")
    long = [states(RunDir(str(tmp_path / "long")).kept_ckpt("epoch", e))[0] for e in (1, 2, 3)]
    window = [states(RunDir(str(tmp_path / "swa")).kept_ckpt("epoch", e))[0] for e in (1, 2)]
    for a, b in zip(long[1:], window):  # continuing = pre-training longer, bit for bit on CPU
        assert all(torch.equal(a[k], b[k]) for k in a)
    swa = states(tmp_path / "swa" / "checkpoints" / "final.pt")[0]
    model = build("convnet_si", 3, width=4, num_classes=10, in_channels=3)
    names = [n for n, _ in model.named_parameters()]
    for n in names:
        torch.testing.assert_close(swa[n], torch.stack([s[n] for s in long]).mean(0), rtol=0, atol=1e-6)
    assert not torch.allclose(long[0]["0.weight"], long[2]["0.weight"], atol=1e-4)  # the window moved
    # BN statistics: one train-mode pass over the shuffled, non-augmented training set
    model.load_state_dict({n: swa[n] for n in names}, strict=False)
    model = speed_setup(model, torch.device("cpu"), "auto", False)  # the memory format swa.py used
    data = load_data("cifar10", cifar, False, None, None, torch.device("cpu"), val_size=0.1)  # as train.py split it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as swa.py ran (--threads 1): the same reduction order in the convolutions
    try:
        recompute_bn_stats(model, bn_batches(data, 32, 3))
    finally:
        torch.set_num_threads(threads)
    buffers = dict(model.named_buffers())
    assert any("running_mean" in k for k in buffers)
    for k, v in buffers.items():
        torch.testing.assert_close(swa[k], v, rtol=0, atol=1e-6)
    rows = [r for r in RunDir(str(tmp_path / "swa")).metrics() if r.get("swa")]
    assert len(rows) == 3 and RunDir(str(tmp_path / "swa")).results()["swa_epochs"] == [1, 2, 3]  # train, val, test


def test_swa_of_strided_kept_checkpoints_is_their_mean(cifar, tmp_path):
    # the ViT recipe's SWA: no continuation; the parent's own checkpoints of epochs 1, 3, 5 (stride 2)
    tiny("convnet_si", cifar, tmp_path / "pt", "--lr", "2e-2", "--seed", "4", "--epochs", "5", "--save_epochs", "1",
         "3", *CPU)
    run("swa.py", "--from", tmp_path / "pt", "--n_models", "3", "--stride", "2", "--threads", "1", *CPU,
        "--out", tmp_path / "swa")
    kept = [states(RunDir(str(tmp_path / "pt")).kept_ckpt("epoch", e))[0] for e in (1, 3)]
    kept.append(states(tmp_path / "pt" / "checkpoints" / "final.pt")[0])
    swa = states(tmp_path / "swa" / "checkpoints" / "final.pt")[0]
    names = [n for n, p in build("convnet_si", 4, width=4, num_classes=10, in_channels=3).named_parameters()]
    for n in names:
        torch.testing.assert_close(swa[n], torch.stack([s[n] for s in kept]).mean(0), rtol=0, atol=1e-6)
    assert not torch.allclose(kept[0]["0.weight"], kept[2]["0.weight"], atol=1e-4)  # the window moved
    assert any(not torch.equal(swa[k], kept[2][k]) for k in swa if "running_mean" in k)  # BN recomputed
    rd = RunDir(str(tmp_path / "swa"))
    assert rd.results()["swa_epochs"] == [1, 3, 5] and all(r["swa"] for r in rd.metrics())
    # a window reaching past the kept checkpoints: one line, nothing written
    bad = run("swa.py", "--from", tmp_path / "pt", "--n_models", "3", "--stride", "1", "--out", tmp_path / "bad",
              check=False)
    assert bad.returncode == 2 and "no checkpoint of epoch 4" in bad.stderr and not (tmp_path / "bad").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model, bf16, compile_, opt_name", [
    ("convnet_si", False, False, "sgd"), ("resnet18_si", True, False, "sgd"), ("resnet18", "auto", False, "sgd"),
    ("convnet_si", False, True, "sgd"), ("convnet_si", False, False, "adam"), ("resnet18", "auto", False, "adamw"),
    ("vit_small", "auto", False, "adam")])
def test_cuda_graph_steps_equal_eager_steps(cifar, model, bf16, compile_, opt_name):
    # 120 images in batches of 32: three replays of the captured step and an eager batch of 24 per epoch
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False  # as train.py on CUDA
    cuda, si = torch.device("cuda"), MODELS[model].recipe["sphere"] == "on"
    data = load_data("cifar10", cifar, False, None, None, cuda)
    recipe = dict(MODELS[model].recipe, optimizer=opt_name, momentum=0.9 if opt_name == "sgd" and not si else 0.0)
    out = []
    for graph in (False, True):
        net = build(model, 0, MODELS[model].smoke_args, num_classes=10, in_channels=3).to(cuda)
        radius = si_norm(net) if si else None
        opt = optimizer(net, recipe, 0.05 if opt_name == "sgd" else 1e-3, radius, cuda)  # as run_image_stage
        step = TrainStep(net, opt, data, 32, aug=recipe["augment"], device=cuda,
                         bf16=use_bf16(bf16, cuda, MODELS[model].bf16),
                         channels_last="auto", compile_=compile_, cuda_graph=graph)  # train.py's memory format
        assert step.bf16 == (bf16 is True or (bf16 == "auto" and MODELS[model].bf16))
        sums = torch.zeros(3, dtype=torch.float64, device=cuda)
        for epoch in (1, 2):
            g = epoch_generator(0, 0, epoch)
            perm = torch.randperm(120, generator=g).to(cuda)
            assert train_epoch(step, perm, epoch_draws(recipe["augment"], 120, generator=g, device=cuda),
                               0, sums, None) == 4
        assert (step.graph is not None) == graph
        # the optimizer's state too (momentum; Adam's step count and moments): the warm-up left no trace
        buffers = [opt.state[p].get(k) for p in net.parameters() for k in ("momentum_buffer", "step", "exp_avg")]
        out.append((net.state_dict(), buffers, sums))
    (a, bufs_a, sums_a), (b, bufs_b, sums_b) = out
    for k in a:
        assert torch.equal(a[k], b[k]), (k, (a[k].double() - b[k].double()).abs().max().item())
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(bufs_a, bufs_b))
    assert torch.equal(sums_a, sums_b) and sums_a[2].item() == 240


ADAM = ("--optimizer", "adam", "--weight_decay", "1e-4", "--augment", "randaugment")  # ProjectedAdam, RandAugment


@pytest.mark.e2e
@pytest.mark.parametrize("sig, recipe", [(signal.SIGKILL, ()), (signal.SIGTERM, ()), (signal.SIGTERM, ADAM)],
                         ids=["kill", "term", "term-adam"])
def test_image_run_interrupted_resumes_bitwise(cifar, tmp_path, sig, recipe):
    # Interrupted right after the evaluation line of epoch 2 or 3 (the checkpoint of the epoch before
    # exists by then): over ten epochs remain, seconds of work on any machine, so the signal always
    # lands mid-run, and SIGTERM (honoured between batches) in the epoch after that line.
    epochs, at = 16, random.choice([2, 3])
    args = ["--dataset", "cifar10", "--data_dir", str(cifar), "--model", "convnet_si", "--width", "4",
            "--batch_size", "8", "--lr", "1e-2", "3e-1", "--epochs", str(epochs), "--threads", "1", *CPU, *recipe]
    run("train.py", *args, "--out", tmp_path / "ref")
    returncode, out = interrupt_at("train.py", *args, "--out", tmp_path / "cut", sig=sig,
                                   moment=rf"epoch +{at}/{epochs} \|")
    assert returncode != 0 and not RunDir(str(tmp_path / "cut")).is_complete(), \
        f"the run finished before {sig.name} at epoch {at}\n{out[-3000:]}"
    if sig == signal.SIGTERM:  # a checkpoint of the very batch it stopped at
        assert returncode == 143 and "SIGTERM: checkpoint written at epoch" in out, out
        assert checkpoint.load(str(tmp_path / "cut" / "checkpoints" / "last.pt"))["pos"] is not None
    else:
        assert returncode == -signal.SIGKILL, out
    resumed = run("train.py", *args, "--out", tmp_path / "cut")
    assert "resuming" in resumed.stdout
    ref, cut = (states(tmp_path / r / "checkpoints" / "final.pt") for r in ("ref", "cut"))
    for a, b in zip(ref, cut):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert RunDir(str(tmp_path / "ref")).metrics() == RunDir(str(tmp_path / "cut")).metrics()
    assert RunDir(str(tmp_path / "cut")).results()["members"] == RunDir(str(tmp_path / "ref")).results()["members"]
    # the optimizer's state too (Adam's step counts and moments), the same after the resume
    opts = [checkpoint.load(str(tmp_path / r / "checkpoints" / "final.pt"))["opts"] for r in ("ref", "cut")]
    flat = [[v for o in run_opts for st in o["state"].values() for v in st.values()] for run_opts in opts]
    assert len(flat[0]) == len(flat[1]) and all(torch.equal(torch.as_tensor(a), torch.as_tensor(b))
                                                for a, b in zip(*flat))
    assert bool(recipe) == any("exp_avg" in st for o in opts[0] for st in o["state"].values())


def test_speed_switch_defaults():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a CUDA device object needs no GPU
    assert [use_bf16("auto", d, rec) for d in (cpu, cuda) for rec in (False, True)] == [False, False, False, True]
    assert [name for name, r in MODELS.items() if r.bf16] == ["resnet18"]  # measured (README); not SI models, not ViT
    assert all(use_bf16(v, cuda, True) and use_bf16(v, cpu, False) for v in (True, "on"))
    assert not any(use_bf16(v, cuda, False) for v in (False, "off"))
    defaults = {"bf16": "auto", "channels_last": "auto", "compile": False, "cuda_graph": "auto"}
    flags = lambda **kw: argparse.Namespace(**{**defaults, **kw})  # noqa: E731
    assert speed_switches(flags(compile=True), cuda)["cuda_graph"]  # a compiled step is captured too
    assert not speed_switches(flags(compile=True), cpu)["cuda_graph"]
    assert not speed_switches(flags(cuda_graph="off"), cuda)["cuda_graph"]


@pytest.mark.e2e
def test_compiled_step_trains_as_the_eager_one(cifar):
    # torch.compile fuses the forward and backward differently: the same training up to rounding. At a
    # small ELR, since this width-4 net is chaotic at larger ones: at ELR 2e-3 a 1e-6 relative change of
    # the initial weights moves the weights after these 4 steps by 15 %, at 1e-4 by 1e-6.
    cpu = torch.device("cpu")
    data = load_data("cifar10", cifar, False, None, None, cpu)
    out = []
    for compile_ in (False, True):
        net = build("convnet_si", 0, width=4, num_classes=10, in_channels=3)
        radius = si_norm(net)
        step = TrainStep(net, make_optimizer(si_parameters(net), "sgd", 1e-4 * radius ** 2, radius=radius), data, 32,
                         aug=False, device=cpu, compile_=compile_)
        sums = torch.zeros(3, dtype=torch.float64)
        perm = torch.randperm(120, generator=epoch_generator(0, 0, 1))
        assert train_epoch(step, perm, None, 0, sums, None) == 4
        assert si_norm(net) == pytest.approx(radius, rel=1e-6)
        out.append((net.state_dict(), sums))
    (a, sums_a), (b, sums_b) = out
    a0 = build("convnet_si", 0, width=4, num_classes=10, in_channels=3).state_dict()
    rel = lambda x, y: ((x - y).norm() / y.norm()).item()  # noqa: E731
    assert min(rel(a[k], a0[k]) for k, p in net.named_parameters() if p.requires_grad) > 1e-3  # it trained
    for k in a:
        if a[k].is_floating_point():  # weights and BN statistics
            assert rel(b[k], a[k]) < 1e-5, k
    torch.testing.assert_close(sums_a, sums_b, rtol=1e-5, atol=1e-6)


def test_channels_last_auto():
    cpu = torch.device("cpu")
    conv = speed_setup(build("convnet_si", 0, width=4, num_classes=10, in_channels=3), cpu, "auto", False)
    res = speed_setup(build("resnet18_si", 0, width=4, num_classes=10, in_channels=3), cpu, "auto", False)
    for weight in conv[3].weight, res.blocks[2].conv1.weight:  # 3x3, cin > 1: the two formats differ
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    off = speed_setup(build("convnet_si", 0, width=4, num_classes=10, in_channels=3), cpu, "off", False)
    assert off[3].weight.is_contiguous()


@pytest.mark.parametrize("name", ["convnet_si", "resnet18_si", "resnet18"])
def test_channels_last_computes_the_same(name):
    """The CPU's channels_last form (the ResNets' shortcuts by models.resnet.Pointwise) gives the
    default form's outputs and gradients, to float64 rounding (in float32 they differ by ~3e-5)."""
    models = [speed_setup(build(name, 0, width=4, num_classes=10, in_channels=3).double(), torch.device("cpu"),
                          cl, False) for cl in ("on", "off")]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
    outs = []
    for model, xb in zip(models, (x.contiguous(memory_format=torch.channels_last), x)):
        outs.append(model(xb))
        torch.nn.functional.cross_entropy(outs[-1], y).backward()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)
    grads = [[p.grad for p in m.parameters() if p.requires_grad] for m in models]
    assert len(grads[0]) > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
