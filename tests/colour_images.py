"""Tiny CIFAR-format data whose class is its background colour, and a model that sees nothing but
each image's mean colour: measurements on it have known answers (tests/test_fourier_images.py,
tests/test_report_images.py, tests/test_geometry_images.py).

An image of class k is the colour colours(classes)[k] plus a class-independent texture (uniform
integers in [-TEXTURE, TEXTURE] per pixel and channel, no clipping), so its mean colour is the
class colour to within about one grey level and all its other frequencies carry no class
information. MeanColour = global average pool -> linear, initialised as the nearest-colour
classifier in normalised space (logit_j = 2 c_j . g - |c_j|^2 for the pooled input g and the
normalised class colour c_j), so it classifies such images perfectly from the start.
"""
import pickle

import numpy as np

from data.images import CIFAR_MEAN, CIFAR_STD

TEXTURE = 20  # grey levels; every class colour lies in [TEXTURE, 255 - TEXTURE], so nothing clips

# The Python source of colours() and MeanColour: written to a file for --model path.py:MeanColour
# and executed here, so that the data and the model agree on the colours.
MODEL_PY = f'''
import torch
from torch import nn

CIFAR_MEAN, CIFAR_STD = {tuple(CIFAR_MEAN)!r}, {tuple(CIFAR_STD)!r}

# Ten background colours (uint8 RGB). Class 2 is the normalisation mean (125, 123, 114): the colour of
# an image whose normalised mean is zero. Class 6 is near black: the colour nearest to an image whose
# raw mean is zero.
PALETTE_10 = [(235, 235, 235), (200, 40, 40), (125, 123, 114), (40, 200, 40), (40, 40, 200),
              (200, 200, 40), (20, 20, 20), (40, 200, 200), (200, 40, 200), (230, 130, 30)]
GRID = (30, 78, 126, 174, 222)  # more classes: the first ones of the 5 x 5 x 5 grid of these levels


def colours(classes):
    """uint8 RGB background colour of each class."""
    if classes <= len(PALETTE_10):
        return PALETTE_10[:classes]
    grid = [(r, g, b) for r in GRID for g in GRID for b in GRID]
    assert classes <= len(grid), classes
    return grid[:classes]


class MeanColour(nn.Module):
    """Global average pool -> linear: the prediction depends on each image's mean colour alone.
    Initialised as the nearest-colour classifier of colours(num_classes) on normalised images;
    handicap > 0 lowers the last class's bias, so that it must be learned."""

    def __init__(self, num_classes, in_channels, gain=1.0, handicap=0.0):
        super().__init__()
        mean, std = torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD)
        c = (torch.tensor(colours(num_classes), dtype=torch.float32) / 255 - mean) / std  # (K, 3)
        self.fc = nn.Linear(in_channels, num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(2 * gain * c)
            self.fc.bias.copy_(-gain * (c * c).sum(1))
            self.fc.bias[-1] -= handicap  # the last class starts out never predicted: training has to learn it

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))
'''
_ns = {}
exec(MODEL_PY, _ns)
colours = _ns["colours"]
GREY, BLACK = 2, 6  # PALETTE_10's classes of a zero normalised mean and of a zero raw mean

# name -> (folder, train files, test file, label key)
LAYOUT = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
          "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels")}


def images_of(labels, classes, rng):
    """(n, 3072) uint8 CIFAR rows: each image its class colour plus the texture."""
    base = np.asarray(colours(classes), dtype=np.int64)[labels]  # (n, 3)
    x = base[:, :, None] + rng.integers(-TEXTURE, TEXTURE + 1, (len(labels), 3, 1024))
    assert x.min() >= 0 and x.max() <= 255
    return x.reshape(len(labels), 3072).astype(np.uint8)


def write_colour_cifar(root, name, train_per_class, test_counts, seed=0):
    """Write CIFAR pickles (torchvision's layout) under root: train_per_class images of every class
    (spread over the training files in class order, round robin), test_counts[k] test images of
    class k (in class order). Returns {"y_train": labels, "y_test": labels} as the loader reads them."""
    folder, train_files, test_file, key = LAYOUT[name]
    classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True)
    y_train = np.tile(np.arange(classes), train_per_class)
    y_test = np.repeat(np.arange(classes), test_counts)
    parts = np.array_split(y_train, len(train_files))
    for f, y in [*zip(train_files, parts), (test_file, y_test)]:
        d = {b"batch_label": f.encode(), key: y.tolist(), b"data": images_of(y, classes, rng),
             b"filenames": [b"x.png"] * len(y)}
        if name == "cifar100":
            d[b"coarse_labels"] = (y // 5).tolist()
        with open(root / folder / f, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    return {"y_train": np.concatenate(parts), "y_test": y_test}


# ---------------------------------------------------------------- runs shared by several test files
# (session fixtures in conftest.py call these once per session)

def practical_sweep(base):
    """A tiny image sweep off the sphere (the practical setting), through every measurement:
    MeanColour with a handicap on tiny CIFAR-10 colour data (5 training images of each class, test
    class k with k + 1 images, so a constant prediction of class k scores (k + 1) / 55), pre-trained
    at three PLRs in one run, fine-tuned at two FLRs with --sharpness, band-evaluated, geometry with
    the appendix-G comparison, report. The PLR 1e-3 member barely moves from its handicapped start
    (the last class never predicted: test accuracy 45 / 55); 0.1 and 10 learn it (1.0).
    Returns {"setup": the setup directory, "data": the data folder, "model": the model spec,
    "y_test": the test labels, "at_loss": the --at_loss used}."""
    from conftest import call as run  # in this process: no interpreter start per script
    data, setup = base / "data", base / "mean_colour"
    labels = write_colour_cifar(data, "cifar10", 5, list(range(1, 11)))
    (base / "mean_colour.py").write_text(MODEL_PY)
    model = f"{base / 'mean_colour.py'}:MeanColour"
    common = ("--threads", "1")
    run("train.py", "--dataset", "cifar10", "--data_dir", data, "--model", model, "--model_args", "handicap=4",
        "--sphere", "off", "--augment", "none", "--lr", "1e-3", "0.1", "10", "--epochs", "3", "--batch_size", "10",
        "--val_size", "0",  # every training image: the known answers count them
        *common, "--out", setup / "pretrain" / "pt")
    run("finetune.py", "--from", setup / "pretrain" / "pt", "--lr", "1e-3", "1e-2", "--epochs", "2", "--sharpness",
        *common, "--out", setup / "finetune" / "pt")
    for stage in ("pretrain", "finetune"):
        run("eval_fourier.py", "--run", setup / stage / "pt", *common)
    # an --at_loss the fine-tuning losses cross: halfway between the first two losses of a member whose
    # loss fell (the default 6e-4 is far below what this tiny run reaches)
    from engine.rundir import RunDir
    rows = [r for r in RunDir(str(setup / "finetune" / "pt")).metrics() if r["split"] == "train"]
    target = None
    for m in sorted({r["member"] for r in rows}):
        loss = [r["loss"] for r in sorted((r for r in rows if r["member"] == m), key=lambda r: r["epoch"])]
        if loss[1] < loss[0]:
            target = (loss[0] + loss[1]) / 2
            break
    assert target is not None, rows
    run("eval_geometry.py", "--finetune", setup / "finetune" / "pt", "--points", "3", "--at_loss", repr(target),
        *common, "--out", setup / "geometry" / "pt")
    run("report.py", "--root", setup)
    return {"setup": setup, "data": data, "model": model, "y_test": labels["y_test"], "at_loss": target}


def si_sweep(base):
    """SI ConvNet (width 4) runs on tiny CIFAR-10 colour data (30 training and 10 test images of each
    class): pre-trained at PLR 1e-3 (learns) and 10 (stuck at chance) for 4 epochs of batch 128 (the
    paper's batch, 3 batches per epoch: 128, 128, 44), then fine-tuned at FLRs 1e-3 and 1e-2 for 2
    epochs with --sharpness. Returns {"pretrain": dir, "finetune": dir, "data": data folder}."""
    from conftest import call as run  # in this process: no interpreter start per script
    data = base / "data"
    write_colour_cifar(data, "cifar10", 30, [10] * 10)
    common = ("--threads", "1")
    run("train.py", "--dataset", "cifar10", "--data_dir", data, "--model", "convnet_si", "--width", "4",
        "--lr", "1e-3", "10", "--epochs", "4", "--val_size", "0", *common, "--out", base / "pretrain")
    run("finetune.py", "--from", base / "pretrain", "--lr", "1e-3", "1e-2", "--epochs", "2", "--sharpness", *common,
        "--out", base / "finetune")
    return {"pretrain": base / "pretrain", "finetune": base / "finetune", "data": data}
