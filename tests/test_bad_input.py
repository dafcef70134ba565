"""Bad input: one clear line on stderr, a non-zero exit, and nothing already written changes."""
import hashlib
import os
import shutil

import numpy as np
import pytest

from conftest import run
from test_images_data import write_cifar
from test_own_model import MODELS_PY, write_npz
from utils import checkpoint


def tree_digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A workspace with a finished pre-training run, a fine-tuning run and a damaged copy."""
    w = tmp_path_factory.mktemp("world")
    run("train.py", "--smoke", "--threads", "1", "--lr", "1e-3", "1e-2", "--out", w / "pt")
    run("finetune.py", "--smoke", "--threads", "1", "--from", w / "pt", "--lr", "1e-3", "--out", w / "ft")
    shutil.copytree(w / "pt", w / "pt_corrupt")
    for name in ("final.pt",):
        with open(w / "pt_corrupt" / "checkpoints" / name, "r+b") as f:
            f.truncate(100)
    shutil.copytree(w / "pt", w / "pt_unfinished")
    os.remove(w / "pt_unfinished" / "results.json")
    # an image run on tiny CIFAR-10 files, and copies whose checkpoint claims another model
    write_cifar(w / "cifar", "cifar10", sizes={**{f"data_batch_{i}": 8 for i in range(1, 6)}, "test_batch": 8})
    run("train.py", "--dataset", "cifar10", "--data_dir", w / "cifar", "--model", "convnet_si", "--smoke",
        "--epochs", "1", "--lr", "1e-3", "--threads", "1", "--out", w / "img")
    run("finetune.py", "--from", w / "img", "--smoke", "--epochs", "1", "--lr", "1e-4", "--threads", "1",
        "--out", w / "img_ft")
    for name, change in (("img_arch", {"width": 8}), ("img_classes", {"num_classes": 100})):
        shutil.copytree(w / "img", w / name)
        path = str(w / name / "checkpoints" / "final.pt")
        ckpt = checkpoint.load(path)
        checkpoint.save(path, dict(ckpt, model_args=dict(ckpt["model_args"], **change)))
    # a researcher's model file and data files, good and bad
    (w / "my_models.py").write_text(MODELS_PY + "\nNOT_A_CLASS = 3\n")
    write_npz(w / "good.npz")
    good = dict(np.load(w / "good.npz"))
    np.savez(w / "no_y_test.npz", **{k: v for k, v in good.items() if k != "y_test"})
    np.savez(w / "negative_labels.npz", **dict(good, y_train=good["y_train"] - 1))
    np.savez(w / "labels_2d.npz", **dict(good, y_train=good["y_train"][:, None]))
    (w / "empty").mkdir()
    (w / "synthetic").mkdir()
    (w / "synthetic" / "sweep.txt").write_text("synthetic smoke parts d0 d1\n")  # a sweep started with --jobs 2
    return w


CASES = {
    "unknown setup": ("bash", "run_all.sh", "--setup", "imagenet", "--out", "{w}/sweep"),
    "unknown preset": ("bash", "run_all.sh", "--preset", "huge", "--out", "{w}/sweep"),
    "run_all unknown flag": ("bash", "run_all.sh", "--fast"),
    "run_all bad jobs": ("bash", "run_all.sh", "--jobs", "0", "--out", "{w}/sweep"),
    "run_all other split": ("bash", "run_all.sh", "--preset", "smoke", "--jobs", "1", "--out", "{w}"),
    "run_all unwritable out": ("bash", "run_all.sh", "--preset", "smoke", "--out", "/proc/no/such"),
    "nan lr": ("train.py", "--smoke", "--lr", "nan", "--out", "{w}/new"),
    "negative lr": ("train.py", "--smoke", "--lr", "1e-3", "-0.1", "--out", "{w}/new"),
    "zero lr": ("train.py", "--smoke", "--lr", "0", "--out", "{w}/new"),
    "empty lr grid": ("train.py", "--smoke", "--lr", "--out", "{w}/new"),
    "duplicate lr": ("train.py", "--smoke", "--lr", "1e-3", "1e-3", "--out", "{w}/new"),
    "negative seed": ("train.py", "--smoke", "--lr", "1e-3", "--seed", "-1", "--out", "{w}/new"),
    "unknown model": ("train.py", "--smoke", "--lr", "1e-3", "--model", "vgg", "--out", "{w}/new"),
    "unknown dataset": ("train.py", "--smoke", "--lr", "1e-3", "--dataset", "mnist3d", "--out", "{w}/new"),
    "out holds another run": ("train.py", "--smoke", "--lr", "5e-3", "--out", "{w}/pt"),
    "unwritable out": ("train.py", "--smoke", "--lr", "1e-3", "--out", "/proc/lrl_no_such/run"),  # root ignores chmod; /proc is unwritable
    "out under a file": ("train.py", "--smoke", "--lr", "1e-3", "--out", "{w}/pt/config.json/run"),
    "bad device": ("train.py", "--smoke", "--lr", "1e-3", "--device", "tpu", "--out", "{w}/new"),
    "finetune from a finetune run": ("finetune.py", "--smoke", "--from", "{w}/ft", "--lr", "1e-3", "--out", "{w}/new"),
    "finetune from nowhere": ("finetune.py", "--smoke", "--from", "{w}/nothing", "--lr", "1e-3", "--out", "{w}/new"),
    "finetune from unfinished": ("finetune.py", "--smoke", "--from", "{w}/pt_unfinished", "--lr", "1e-3",
                                 "--out", "{w}/new"),
    "finetune from corrupt": ("finetune.py", "--smoke", "--from", "{w}/pt_corrupt", "--lr", "1e-3", "--out", "{w}/new"),
    "finetune nan lr": ("finetune.py", "--smoke", "--from", "{w}/pt", "--lr", "nan", "--out", "{w}/new"),
    "swa from a finetune run": ("swa.py", "--from", "{w}/ft", "--out", "{w}/new"),
    "swa too many models": ("swa.py", "--from", "{w}/pt", "--n_models", "50", "--out", "{w}/new"),
    "swa zero models": ("swa.py", "--from", "{w}/pt", "--n_models", "0", "--out", "{w}/new"),
    "eval missing run": ("eval_fourier.py", "--run", "{w}/nothing"),
    "eval corrupt run": ("eval_fourier.py", "--run", "{w}/pt_corrupt"),
    "report missing root": ("report.py", "--root", "{w}/nothing"),
    "report root without runs": ("report.py", "--root", "{w}/empty"),
    "image dataset missing": ("train.py", "--dataset", "cifar100", "--data_dir", "{w}/cifar", "--model",
                              "convnet_si", "--lr", "1e-3", "--out", "{w}/new"),
    "image mlp on images": ("train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model", "mlp_si",
                            "--lr", "1e-3", "--out", "{w}/new"),
    "image convnet on tick": ("train.py", "--model", "convnet_si", "--lr", "1e-3", "--out", "{w}/new"),
    "image iters flag": ("train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model", "convnet_si",
                         "--lr", "1e-3", "--iters", "10", "--out", "{w}/new"),
    "tick epochs flag": ("train.py", "--smoke", "--lr", "1e-3", "--epochs", "3", "--out", "{w}/new"),
    "image radius of practical": ("train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model",
                                  "resnet18", "--radius", "3", "--lr", "1e-3", "--out", "{w}/new"),
    "image zero lr": ("train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model", "convnet_si",
                      "--lr", "0", "--out", "{w}/new"),
    "cuda graph on cpu": ("train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model", "convnet_si",
                          "--lr", "1e-3", "--device", "cpu", "--cuda_graph", "on", "--out", "{w}/new"),
    "swa unknown bf16 setting": ("swa.py", "--from", "{w}/img", "--bf16", "fp8", "--out", "{w}/new"),
    "image finetune nan lr": ("finetune.py", "--from", "{w}/img", "--lr", "nan", "--out", "{w}/new"),
    "image finetune from finetune": ("finetune.py", "--from", "{w}/img_ft", "--lr", "1e-4", "--out", "{w}/new"),
    "image swa from finetune": ("swa.py", "--from", "{w}/img_ft", "--out", "{w}/new"),
    "image finetune other architecture": ("finetune.py", "--from", "{w}/img_arch", "--lr", "1e-4", "--epochs", "1",
                                          "--out", "{w}/new"),
    "image swa other class count": ("swa.py", "--from", "{w}/img_classes", "--out", "{w}/new"),
    "image finetune missing epoch": ("finetune.py", "--from", "{w}/img", "--lr", "1e-4", "--from_epoch", "7",
                                     "--out", "{w}/new"),
    # a researcher's model and data
    "own model file missing": ("train.py", "--model", "{w}/nope.py:Net", "--dataset", "{w}/good.npz", "--lr", "1e-3",
                               "--out", "{w}/new"),
    "own model no such class": ("train.py", "--model", "{w}/my_models.py:Nope", "--dataset", "{w}/good.npz",
                                "--lr", "1e-3", "--out", "{w}/new"),
    "own model not a class": ("train.py", "--model", "{w}/my_models.py:NOT_A_CLASS", "--dataset", "{w}/good.npz",
                              "--lr", "1e-3", "--out", "{w}/new"),
    "own model not a module": ("train.py", "--model", "{w}/my_models.py:NotAModule", "--dataset", "{w}/good.npz",
                               "--lr", "1e-3", "--out", "{w}/new"),
    "own model constructor raises": ("train.py", "--model", "{w}/my_models.py:Raises", "--dataset", "{w}/good.npz",
                                     "--lr", "1e-3", "--out", "{w}/new"),
    "own model bad model_args": ("train.py", "--model", "{w}/my_models.py:SICNN", "--dataset", "{w}/good.npz",
                                 "--model_args", "width=four", "--lr", "1e-3", "--out", "{w}/new"),
    "own model unknown model_arg": ("train.py", "--model", "{w}/my_models.py:SICNN", "--dataset", "{w}/good.npz",
                                    "--model_args", "depth=3", "--lr", "1e-3", "--out", "{w}/new"),
    "own model cannot take the images": ("train.py", "--model", "{w}/my_models.py:Flat", "--dataset",
                                         "{w}/good.npz", "--lr", "1e-3", "--out", "{w}/new"),
    "own model false invariance claim": ("train.py", "--model", "{w}/my_models.py:ClaimsButBiased", "--dataset",
                                         "{w}/good.npz", "--lr", "1e-3", "--out", "{w}/new"),
    "own data missing file": ("train.py", "--model", "convnet_si", "--dataset", "{w}/nope.npz", "--lr", "1e-3",
                              "--out", "{w}/new"),
    "own data missing array": ("train.py", "--model", "convnet_si", "--dataset", "{w}/no_y_test.npz",
                               "--lr", "1e-3", "--out", "{w}/new"),
    "own data negative labels": ("train.py", "--model", "convnet_si", "--dataset", "{w}/negative_labels.npz",
                                 "--lr", "1e-3", "--out", "{w}/new"),
    "own data labels of the wrong shape": ("train.py", "--model", "convnet_si", "--dataset", "{w}/labels_2d.npz",
                                           "--lr", "1e-3", "--out", "{w}/new"),
    "own data bad function": ("train.py", "--model", "convnet_si", "--dataset", "no_such_module:load",
                              "--lr", "1e-3", "--out", "{w}/new"),
    "momentum with adam": ("train.py", "--model", "resnet18", "--dataset", "{w}/good.npz", "--optimizer", "adam",
                           "--momentum", "0.9", "--lr", "1e-3", "--out", "{w}/new"),
    "sphere on for a practical model": ("train.py", "--model", "resnet18", "--dataset", "{w}/good.npz",
                                        "--sphere", "on", "--lr", "1e-3", "--out", "{w}/new"),
    "population backend with adam": ("train.py", "--smoke", "--optimizer", "adam", "--lr", "1e-3",
                                     "--out", "{w}/new"),
    "negative weight decay": ("train.py", "--model", "convnet_si", "--dataset", "{w}/good.npz", "--weight_decay",
                              "-1", "--lr", "1e-3", "--out", "{w}/new"),
    "data_seed for fixed data": ("train.py", "--model", "convnet_si", "--dataset", "{w}/good.npz", "--data_seed",
                                 "1", "--lr", "1e-3", "--out", "{w}/new"),
    "model_args sets num_classes": ("train.py", "--model", "convnet_si", "--dataset", "{w}/good.npz",
                                    "--model_args", "num_classes=3", "--lr", "1e-3", "--out", "{w}/new"),
    "vit patch size does not divide the images": ("train.py", "--model", "vit_small", "--dataset", "{w}/good.npz",
                                                  "--model_args", "patch_size=5", "image_size=12", "--lr", "1e-3",
                                                  "--out", "{w}/new"),
    "vit image size of other data": ("train.py", "--model", "vit_small", "--dataset", "{w}/good.npz", "--smoke",
                                     "--lr", "1e-3", "--out", "{w}/new"),
    "randaugment on the synthetic setup": ("train.py", "--smoke", "--augment", "randaugment", "--lr", "1e-3",
                                           "--out", "{w}/new"),
    "swa stride past the kept checkpoints": ("swa.py", "--from", "{w}/img", "--n_models", "3", "--stride", "2",
                                             "--out", "{w}/new"),
    "finetune sphere off of an SI run": ("finetune.py", "--from", "{w}/img", "--lr", "1e-4", "--sphere", "off",
                                         "--out", "{w}/new"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_fails_cleanly(world, name):
    before = tree_digest(world)
    args = [a.format(w=world) for a in CASES[name]]
    proc = run(*args, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert tree_digest(world) == before
    assert not os.path.exists(world / "new")
