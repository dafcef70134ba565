"""A finished constant-LR run started again with a longer --epochs / --iters continues from its final
state and ends as a run started with the longer length: metrics rows and final weights bit for bit,
the rows it had stay, and nothing it had done is redone (each backend: an image run of the
nn.Module backend with momentum and augmentation, the synthetic population with its SWA snapshots)."""
import json

import torch

from conftest import call as run  # in this process: no interpreter start per run
from engine import checkpoint
from engine.rundir import RunDir
from test_images_data import write_cifar

CPU = ("--device", "cpu", "--threads", "1")


def final(path):
    return checkpoint.load(RunDir(str(path)).final_ckpt)


def check_equal(short, long):
    """The continued run `short` against `long`: weights, optimizer state and every metrics row."""
    a, b = final(short), final(long)
    assert a["done"] == b["done"] and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert RunDir(str(short)).metrics() == RunDir(str(long)).metrics()
    assert json.loads((short / "results.json").read_text())["members"] == \
        json.loads((long / "results.json").read_text())["members"]
    return a, b


def test_an_image_run_continued_from_2_to_4_epochs_is_the_4_epoch_run(tmp_path):
    write_cifar(tmp_path / "data", "cifar10", sizes={**{f"data_batch_{i}": 20 for i in range(1, 6)}, "test_batch": 20})
    flags = ("train.py", "--dataset", "cifar10", "--data_dir", tmp_path / "data", "--model", "resnet18", "--width", "4",
             "--batch_size", "32", "--lr", "0.05", "--seed", "1", *CPU)  # practical: momentum, weight decay, crop + flip
    run(*flags, "--epochs", "4", "--out", tmp_path / "long")
    run(*flags, "--epochs", "2", "--out", tmp_path / "short")
    before = RunDir(str(tmp_path / "short")).metrics()
    done = run(*flags, "--epochs", "4", "--out", tmp_path / "short").stdout
    assert "continuing the run from --epochs 2 to 4" in done and "continuing" in done and "from epoch 2" in done
    assert "epoch 1/" not in done and "epoch 2/" not in done  # nothing trained or evaluated twice
    a, b = check_equal(tmp_path / "short", tmp_path / "long")
    assert RunDir(str(tmp_path / "short")).metrics()[:len(before)] == before  # the rows it had stay
    for oa, ob in zip(a["opts"], b["opts"]):  # the momentum buffers too
        assert all(torch.equal(x["momentum_buffer"], y["momentum_buffer"]) for x, y in
                   zip(oa["state"].values(), ob["state"].values()))
    rd = RunDir(str(tmp_path / "short"))
    assert (tmp_path / "short" / "results_2.json").exists() and rd.config()["args"]["epochs"] == 4
    assert "complete; nothing to do" in run(*flags, "--epochs", "4", "--out", tmp_path / "short").stdout
    # a longer fine-tuning continues the same way
    ft = ("finetune.py", "--from", tmp_path / "long", "--lr", "1e-3", *CPU)
    run(*ft, "--epochs", "2", "--out", tmp_path / "ft_long")
    run(*ft, "--epochs", "1", "--out", tmp_path / "ft_short")
    run(*ft, "--epochs", "2", "--out", tmp_path / "ft_short")
    check_equal(tmp_path / "ft_short", tmp_path / "ft_long")


def test_a_population_continued_from_100_to_200_iterations_is_the_200_iteration_run(tmp_path):
    flags = ("train.py", "--smoke", "--lr", "1e-3", "3e-2", "--seed", "0", "1", "--data_seed", "0", *CPU)
    run(*flags, "--iters", "200", "--out", tmp_path / "long")
    run(*flags, "--iters", "100", "--out", tmp_path / "short")
    out = run(*flags, "--iters", "200", "--out", tmp_path / "short").stdout
    assert "step 100/" not in out and "step 150/" in out
    a, _ = check_equal(tmp_path / "short", tmp_path / "long")
    assert a["kept"] == [160, 170, 180, 190, 200]  # the SWA snapshots of the longer run
    for s in a["kept"]:
        x, y = (checkpoint.load(RunDir(str(p)).kept_ckpt("step", s))["state"] for p in (tmp_path / "short",
                                                                                         tmp_path / "long"))
        assert torch.equal(x["fc1.weight"], y["fc1.weight"])
    # a cosine run's LR depends on its length: another length is another run
    cos = run(*flags, "--iters", "100", "--schedule", "cosine", "--out", tmp_path / "cos")
    assert cos.returncode == 0
    bad = run(*flags, "--iters", "200", "--schedule", "cosine", "--out", tmp_path / "cos", check=False)
    assert bad.returncode == 2 and "cosine-schedule run of --iters 100" in bad.stderr
