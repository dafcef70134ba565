"""Bad input: one clear line on stderr that says what is wrong (each case its own message), a non-zero
exit, and nothing already written changes. The scripts run in this process (conftest.call: no
interpreter start per case); run_all.sh's cases run as subprocesses."""
import hashlib
import os
import shutil

import numpy as np
import pytest

from conftest import call, run
from test_images_data import write_cifar
from test_own_model import MODELS_PY, write_npz
from engine import checkpoint


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
    call("train.py", "--smoke", "--threads", "1", "--lr", "1e-3", "1e-2", "--out", w / "pt")
    call("finetune.py", "--smoke", "--threads", "1", "--from", w / "pt", "--lr", "1e-3", "--out", w / "ft")
    shutil.copytree(w / "pt", w / "pt_corrupt")
    for name in ("final.pt",):
        with open(w / "pt_corrupt" / "checkpoints" / name, "r+b") as f:
            f.truncate(100)
    shutil.copytree(w / "pt", w / "pt_unfinished")
    os.remove(w / "pt_unfinished" / "results.json")
    # an image run on tiny CIFAR-10 files, and copies whose checkpoint claims another model
    write_cifar(w / "cifar", "cifar10", sizes={**{f"data_batch_{i}": 8 for i in range(1, 6)}, "test_batch": 8})
    call("train.py", "--dataset", "cifar10", "--data_dir", w / "cifar", "--model", "convnet_si", "--smoke",
         "--epochs", "1", "--lr", "1e-3", "--threads", "1", "--out", w / "img")
    call("finetune.py", "--from", w / "img", "--smoke", "--epochs", "1", "--lr", "1e-4", "--threads", "1",
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
    ten = dict(np.load(write_npz(w / "ten_classes.npz", classes=10)))  # y_train holds every label 0..9
    os.remove(w / "ten_classes.npz")
    ten["y_test"][5] = 12  # a test image of a class never trained on
    np.savez(w / "unseen_test_label.npz", **ten)
    (w / "empty").mkdir()
    (w / "synthetic").mkdir()
    (w / "synthetic" / "sweep.txt").write_text(  # the smoke sweep started with --jobs 2
        "setup=synthetic\npreset=smoke\nmodel=mlp_si\nmodel_args=\ndataset=tick\nplrs=1e-3 1e-2 0.3\n"
        "flrs=1e-4 3e-3\nseeds=0\ndata_seeds=0 1\npretrain=\nfinetune=\nrecipe=\nruns=d0 d1\n")
    (w / "old" / "synthetic").mkdir(parents=True)
    (w / "old" / "synthetic" / "sweep.txt").write_text("synthetic smoke parts d0 d1\n")  # an earlier version's
    return w


# name -> (a substring of the one error line that case must print, with {w} the workspace; the command)
CASES = {
    "unknown setup": ("unknown setup 'imagenet'",
                      "bash", "run_all.sh", "--setup", "imagenet", "--out", "{w}/sweep"),
    "unknown preset": ("unknown preset 'huge'",
                       "bash", "run_all.sh", "--preset", "huge", "--out", "{w}/sweep"),
    "run_all unknown flag": ("unknown argument '--fast'",
                             "bash", "run_all.sh", "--fast"),
    "run_all bad jobs": ("--jobs needs a positive integer",
                         "bash", "run_all.sh", "--jobs", "0", "--out", "{w}/sweep"),
    "run_all other split": ("{w}/synthetic holds another sweep: its runs are d0 d1 there, d0-1 here (--jobs splits",
                            "bash", "run_all.sh", "--preset", "smoke", "--jobs", "1", "--out", "{w}"),
    "run_all other grid": ('{w}/synthetic holds another sweep: --plrs "1e-3 1e-2 0.3" there, "1e-3 1e-2" here;',
                           "bash", "run_all.sh", "--preset", "smoke", "--jobs", "2", "--plrs", "1e-3 1e-2", "--out", "{w}"),
    "run_all earlier sweep": ("{w}/old/synthetic holds another sweep: a sweep of an earlier version (synthetic smoke",
                              "bash", "run_all.sh", "--preset", "smoke", "--out", "{w}/old"),
    "run_all negative plr": ("--plrs '-0.1': learning rates must be finite numbers > 0",
                             "bash", "run_all.sh", "--plrs", "1e-3 -0.1", "--out", "{w}/sweep"),
    "run_all bad optimizer": ("--optimizer needs sgd, adam or adamw",
                              "bash", "run_all.sh", "--optimizer", "lion", "--out", "{w}/sweep"),
    "run_all recipe the model cannot train": ("--optimizer adam: the fused population backend trains plain projected SGD",
                                              "bash", "run_all.sh", "--preset", "smoke", "--optimizer", "adam",
                                              "--out", "{w}/recipe"),
    "run_all unwritable out": ("cannot write to /proc/no/such/synthetic",
                               "bash", "run_all.sh", "--preset", "smoke", "--out", "/proc/no/such"),
    "nan lr": ("--lr nan: learning rates must be finite and > 0",
               "train.py", "--smoke", "--lr", "nan", "--out", "{w}/new"),
    "negative lr": ("--lr -0.1: learning rates must be finite and > 0",
                    "train.py", "--smoke", "--lr", "1e-3", "-0.1", "--out", "{w}/new"),
    "zero lr": ("--lr 0.0: learning rates must be finite and > 0",
                "train.py", "--smoke", "--lr", "0", "--out", "{w}/new"),
    "empty lr grid": ("argument --lr: expected at least one argument",
                      "train.py", "--smoke", "--lr", "--out", "{w}/new"),
    "duplicate lr": ("--lr lists a learning rate twice",
                     "train.py", "--smoke", "--lr", "1e-3", "1e-3", "--out", "{w}/new"),
    "negative seed": ("--seed must be distinct non-negative integers, got [-1]",
                      "train.py", "--smoke", "--lr", "1e-3", "--seed", "-1", "--out", "{w}/new"),
    "unknown model": ("unknown model 'vgg'",
                      "train.py", "--smoke", "--lr", "1e-3", "--model", "vgg", "--out", "{w}/new"),
    "unknown dataset": ("unknown dataset 'mnist3d'",
                        "train.py", "--smoke", "--lr", "1e-3", "--dataset", "mnist3d", "--out", "{w}/new"),
    "out holds another run": ("{w}/pt holds a different run (pretrain; --lr 0.001 0.01 there, 0.005 here)",
                              "train.py", "--smoke", "--lr", "5e-3", "--out", "{w}/pt"),
    "unwritable out": ("cannot write to /proc/lrl_no_such/run",
                       # root ignores chmod; /proc is unwritable
                       "train.py", "--smoke", "--lr", "1e-3", "--out", "/proc/lrl_no_such/run"),
    "out under a file": ("cannot write to {w}/pt/config.json/run",
                         "train.py", "--smoke", "--lr", "1e-3", "--out", "{w}/pt/config.json/run"),
    "bad device": ("--device 'tpu' is not a device",
                   "train.py", "--smoke", "--lr", "1e-3", "--device", "tpu", "--out", "{w}/new"),
    "finetune from a finetune run": ("--from {w}/ft is a finetune run; expected a pretrain run",
                                     "finetune.py", "--smoke", "--from", "{w}/ft", "--lr", "1e-3", "--out", "{w}/new"),
    "finetune from nowhere": ("--from {w}/nothing is not a run directory",
                              "finetune.py", "--smoke", "--from", "{w}/nothing", "--lr", "1e-3", "--out", "{w}/new"),
    "finetune from unfinished": ("{w}/pt_unfinished is not a complete run (no results.json)",
                                 "finetune.py", "--smoke", "--from", "{w}/pt_unfinished", "--lr", "1e-3",
                                 "--out", "{w}/new"),
    "finetune from corrupt": ("cannot read checkpoint {w}/pt_corrupt/checkpoints/final.pt",
                              "finetune.py", "--smoke", "--from", "{w}/pt_corrupt", "--lr", "1e-3", "--out", "{w}/new"),
    "finetune nan lr": ("--lr nan: learning rates must be finite and > 0",
                        "finetune.py", "--smoke", "--from", "{w}/pt", "--lr", "nan", "--out", "{w}/new"),
    "swa from a finetune run": ("--from {w}/ft is a finetune run; expected a pretrain run",
                                "swa.py", "--from", "{w}/ft", "--out", "{w}/new"),
    "swa too many models": ("--n_models 50: {w}/pt kept only 5 snapshots",
                            "swa.py", "--from", "{w}/pt", "--n_models", "50", "--out", "{w}/new"),
    "swa zero models": ("--n_models must be a positive integer, got 0",
                        "swa.py", "--from", "{w}/pt", "--n_models", "0", "--out", "{w}/new"),
    "eval missing run": ("--run {w}/nothing is not a run directory",
                         "eval_fourier.py", "--run", "{w}/nothing"),
    "eval corrupt run": ("cannot read checkpoint {w}/pt_corrupt/checkpoints/final.pt",
                         "eval_fourier.py", "--run", "{w}/pt_corrupt"),
    "report missing root": ("--root {w}/nothing is not a directory",
                            "report.py", "--root", "{w}/nothing"),
    "report root without runs": ("--root {w}/empty holds no complete pre-training run",
                                 "report.py", "--root", "{w}/empty"),
    "image dataset missing": ("cifar100 not found: {w}/cifar/cifar-100-python/train is missing",
                              "train.py", "--dataset", "cifar100", "--data_dir", "{w}/cifar", "--model",
                              "convnet_si", "--lr", "1e-3", "--out", "{w}/new"),
    "image mlp on images": ("model mlp_si takes vector inputs but dataset cifar10 has images",
                            "train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model", "mlp_si",
                            "--lr", "1e-3", "--out", "{w}/new"),
    "image convnet on tick": ("model convnet_si takes image inputs but dataset tick has vectors",
                              "train.py", "--model", "convnet_si", "--lr", "1e-3", "--out", "{w}/new"),
    "image iters flag": ("--iters does not apply to this model (epochs)",
                         "train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model", "convnet_si",
                         "--lr", "1e-3", "--iters", "10", "--out", "{w}/new"),
    "tick epochs flag": ("--epochs does not apply to this model (iterations)",
                         "train.py", "--smoke", "--lr", "1e-3", "--epochs", "3", "--out", "{w}/new"),
    "image radius of practical": ("--radius 3.0: needs a positive radius and the sphere on",
                                  "train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model",
                                  "resnet18", "--radius", "3", "--lr", "1e-3", "--out", "{w}/new"),
    "image zero lr": ("--lr 0.0: learning rates must be finite and > 0",
                      "train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model", "convnet_si",
                      "--lr", "0", "--out", "{w}/new"),
    "cuda graph on cpu": ("--cuda_graph on needs a CUDA device",
                          "train.py", "--dataset", "cifar10", "--data_dir", "{w}/cifar", "--model", "convnet_si",
                          "--lr", "1e-3", "--device", "cpu", "--cuda_graph", "on", "--out", "{w}/new"),
    "swa unknown bf16 setting": ("argument --bf16: invalid choice: 'fp8'",
                                 "swa.py", "--from", "{w}/img", "--bf16", "fp8", "--out", "{w}/new"),
    "image finetune nan lr": ("--lr nan: learning rates must be finite and > 0",
                              "finetune.py", "--from", "{w}/img", "--lr", "nan", "--out", "{w}/new"),
    "image finetune from finetune": ("--from {w}/img_ft is a finetune run; expected a pretrain run",
                                     "finetune.py", "--from", "{w}/img_ft", "--lr", "1e-4", "--out", "{w}/new"),
    "image swa from finetune": ("--from {w}/img_ft is a finetune run; expected a pretrain run",
                                "swa.py", "--from", "{w}/img_ft", "--out", "{w}/new"),
    "image finetune other architecture": ("the checkpoint's member 0 does not fit ConvNetSI (size mismatch",
                                          "finetune.py", "--from", "{w}/img_arch", "--lr", "1e-4", "--epochs", "1",
                                          "--out", "{w}/new"),
    "image swa other class count": ("cifar10 has 10 classes but the checkpoint's model 100",
                                    "swa.py", "--from", "{w}/img_classes", "--out", "{w}/new"),
    "image finetune missing epoch": ("--from_epoch 7: {w}/img/checkpoints/epoch_0007.pt does not exist",
                                     "finetune.py", "--from", "{w}/img", "--lr", "1e-4", "--from_epoch", "7",
                                     "--out", "{w}/new"),
    # a researcher's model and data
    "own model file missing": ("{w}/nope.py does not exist",
                               "train.py", "--model", "{w}/nope.py:Net", "--dataset", "{w}/good.npz", "--lr", "1e-3",
                               "--out", "{w}/new"),
    "own model no such class": ("{w}/my_models.py has no 'Nope'",
                                "train.py", "--model", "{w}/my_models.py:Nope", "--dataset", "{w}/good.npz",
                                "--lr", "1e-3", "--out", "{w}/new"),
    "own model not a class": ("NOT_A_CLASS is a int, not a class",
                              "train.py", "--model", "{w}/my_models.py:NOT_A_CLASS", "--dataset", "{w}/good.npz",
                              "--lr", "1e-3", "--out", "{w}/new"),
    "own model not a module": ("class NotAModule is not a torch.nn.Module subclass",
                               "train.py", "--model", "{w}/my_models.py:NotAModule", "--dataset", "{w}/good.npz",
                               "--lr", "1e-3", "--out", "{w}/new"),
    "own model constructor raises": ("constructing Raises(num_classes=3, in_channels=3) failed: RuntimeError: no GPU",
                                     "train.py", "--model", "{w}/my_models.py:Raises", "--dataset", "{w}/good.npz",
                                     "--lr", "1e-3", "--out", "{w}/new"),
    "own model bad model_args": ("model argument 'width=four': 'four' is not a Python literal",
                                 "train.py", "--model", "{w}/my_models.py:SICNN", "--dataset", "{w}/good.npz",
                                 "--model_args", "width=four", "--lr", "1e-3", "--out", "{w}/new"),
    "own model unknown model_arg": ("got an unexpected keyword argument 'depth'",
                                    "train.py", "--model", "{w}/my_models.py:SICNN", "--dataset", "{w}/good.npz",
                                    "--model_args", "depth=3", "--lr", "1e-3", "--out", "{w}/new"),
    "own model cannot take the images": ("my_models.py:Flat cannot take these (3, 12, 12) images",
                                         "train.py", "--model", "{w}/my_models.py:Flat", "--dataset",
                                         "{w}/good.npz", "--lr", "1e-3", "--out", "{w}/new"),
    "own model false invariance claim": ("the parameter that breaks it most is head.bias",
                                         "train.py", "--model", "{w}/my_models.py:ClaimsButBiased", "--dataset",
                                         "{w}/good.npz", "--lr", "1e-3", "--out", "{w}/new"),
    "own data missing file": ("dataset {w}/nope.npz does not exist",
                              "train.py", "--model", "convnet_si", "--dataset", "{w}/nope.npz", "--lr", "1e-3",
                              "--out", "{w}/new"),
    "own data missing array": ("{w}/no_y_test.npz has no array y_test",
                               "train.py", "--model", "convnet_si", "--dataset", "{w}/no_y_test.npz",
                               "--lr", "1e-3", "--out", "{w}/new"),
    "own data negative labels": ("y_train has the negative label -1",
                                 "train.py", "--model", "convnet_si", "--dataset", "{w}/negative_labels.npz",
                                 "--lr", "1e-3", "--out", "{w}/new"),
    "own data labels of the wrong shape": ("y_train has shape (96, 1); labels must be 1-D",
                                           "train.py", "--model", "convnet_si", "--dataset", "{w}/labels_2d.npz",
                                           "--lr", "1e-3", "--out", "{w}/new"),
    "own data test label never trained": ("y_test has the label 12, which y_train never has",
                                          "train.py", "--model", "convnet_si", "--dataset",
                                          "{w}/unseen_test_label.npz", "--lr", "1e-3", "--out", "{w}/new"),
    "own data bad function": ("dataset no_such_module:load: cannot import module no_such_module",
                              "train.py", "--model", "convnet_si", "--dataset", "no_such_module:load",
                              "--lr", "1e-3", "--out", "{w}/new"),
    "momentum with adam": ("--momentum 0.9 does not apply to --optimizer adam",
                           "train.py", "--model", "resnet18", "--dataset", "{w}/good.npz", "--optimizer", "adam",
                           "--momentum", "0.9", "--lr", "1e-3", "--out", "{w}/new"),
    "sphere on for a practical model": ("--sphere on: resnet18 does not declare scale_invariant = True",
                                        "train.py", "--model", "resnet18", "--dataset", "{w}/good.npz",
                                        "--sphere", "on", "--lr", "1e-3", "--out", "{w}/new"),
    "population backend with adam": ("--optimizer adam: the fused population backend trains plain projected SGD",
                                     "train.py", "--smoke", "--optimizer", "adam", "--lr", "1e-3",
                                     "--out", "{w}/new"),
    "negative weight decay": ("--weight_decay must be finite and >= 0, got -1.0",
                              "train.py", "--model", "convnet_si", "--dataset", "{w}/good.npz", "--weight_decay",
                              "-1", "--lr", "1e-3", "--out", "{w}/new"),
    "data_seed for fixed data": ("--data_seed does not apply to {w}/good.npz",
                                 "train.py", "--model", "convnet_si", "--dataset", "{w}/good.npz", "--data_seed",
                                 "1", "--lr", "1e-3", "--out", "{w}/new"),
    "model_args sets num_classes": ("--model_args num_classes: set by the data",
                                    "train.py", "--model", "convnet_si", "--dataset", "{w}/good.npz",
                                    "--model_args", "num_classes=3", "--lr", "1e-3", "--out", "{w}/new"),
    "vit patch size does not divide the images": ("image_size 12 is not divisible by patch_size 5",
                                                  "train.py", "--model", "vit_small", "--dataset", "{w}/good.npz",
                                                  "--model_args", "patch_size=5", "image_size=12", "--lr", "1e-3",
                                                  "--out", "{w}/new"),
    "vit image size of other data": ("ViTSmall was built for 32x32 images, got 12x12",
                                     "train.py", "--model", "vit_small", "--dataset", "{w}/good.npz", "--smoke",
                                     "--lr", "1e-3", "--out", "{w}/new"),
    "randaugment on the synthetic setup": ("--augment randaugment: the fused population backend",
                                           "train.py", "--smoke", "--augment", "randaugment", "--lr", "1e-3",
                                           "--out", "{w}/new"),
    "swa stride window before epoch 1": ("--n_models 3 --stride 2: the window -3 .. 1 reaches before epoch 1 of {w}/img",
                                             "swa.py", "--from", "{w}/img", "--n_models", "3", "--stride", "2",
                                             "--out", "{w}/new"),
    "finetune sphere off of an SI run": ("--sphere off: the parent was trained with the sphere on",
                                         "finetune.py", "--from", "{w}/img", "--lr", "1e-4", "--sphere", "off",
                                         "--out", "{w}/new"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_fails_cleanly(world, name):
    before = tree_digest(world)
    expected, *command = CASES[name]
    command = [a.format(w=world) for a in command]
    proc = (run if command[0] == "bash" else call)(*command, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected.format(w=world) in lines[0]  # this case's own message, not just any one-line error
    assert tree_digest(world) == before
    assert not os.path.exists(world / "new")
