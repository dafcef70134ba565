"""Image datasets as whole uint8 tensors on the device, and batched augmentation.

    d = load_images("cifar10", "~/datasets", device="cuda")
    x = normalize(d["x_train"], d["mean"], d["std"])          # (50000, 3, 32, 32) float32, once
    g = torch.Generator().manual_seed(0)
    for idx in batches(len(x), 128, g, x.device):             # (128,) int64 indices on the device
        xb, yb = x[idx], d["y_train"][idx]
    # practical setup: augment the uint8 batch, then normalise it, so that the padding is black
    # (0 before normalisation) as with torchvision's RandomCrop(32, padding=4):
        xb = normalize(augment(d["x_train"][idx], generator=g), d["mean"], d["std"])

Files (no DataLoader, no PIL; torchvision is used only to download):
- CIFAR-10/100: torchvision's on-disk format under data_dir, `cifar-10-batches-py/data_batch_1..5,
  test_batch` and `cifar-100-python/train, test`: pickled dicts with b"data" (N, 3072) uint8, each
  row 1024 R, 1024 G, 1024 B values of a row-major 32x32 image, and b"labels" / b"fine_labels".
- Fashion-MNIST: IDX files (`train-images-idx3-ubyte[.gz]` etc.) from data_dir/FashionMNIST/raw
  (torchvision's layout) or else /usr/share/datasets/fashion-mnist (Debian's
  dataset-fashion-mnist package); 28x28 grey images zero-padded to 32x32, one channel.
- A researcher's own data (data/custom.py: `load_custom`): an .npz with x_train, y_train, x_test, y_test in
  torchvision's `dataset.data` layout (uint8 (N, H, W, C) or (N, H, W), any size; integer labels
  from 0), or a `package.module:function` returning the same arrays. Read with allow_pickle=False.

Verification: md5 sums are checked by torchvision only when it downloads. Reading does not check
them (so tests can write tiny files); instead every file must unpickle / parse as the format says
and pass structural checks: data uint8 of the right shape, one integer label per image, labels in
[0, classes), IDX headers consistent with the payload size. Anything else is a UserError naming the
file and the fix (delete it and download again). Note that unpickling runs code from the file:
point data_dir only at files you trust, as with torchvision itself.
"""
import gzip
import pathlib
import pickle

import numpy as np
import torch

from core.errors import UserError

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
# Mean/std over all pixels of the 60000 training images *after* padding to 32x32 (the images the
# model sees; the usual 28x28 values are 0.2860/0.3530). tests/test_images_data.py recomputes them.
FMNIST_MEAN, FMNIST_STD = (0.2190,), (0.3318,)
FMNIST_SYSTEM_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")

# name -> (folder under data_dir, train files, test files, label key, classes)
CIFAR = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                     ["test_batch"], "labels", 10),
         "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100)}
FMNIST_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
                "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
DATASETS = (*CIFAR, "fashion_mnist")


def load_images(name, data_dir, download=False, train_size=None, device="cpu"):
    """A whole dataset on `device`: dict of x_train/x_test uint8 (N, C, 32, 32), y_train/y_test
    int64 (N,), mean/std (tuples of C floats, for `normalize`), num_classes.

    download: fetch missing files with torchvision first (needs internet).
    train_size: keep only the first this many training images (the test set stays whole).
    """
    data_dir = pathlib.Path(data_dir).expanduser()
    if name in CIFAR:
        arrays, mean, std = _load_cifar(name, data_dir, download), CIFAR_MEAN, CIFAR_STD
    elif name == "fashion_mnist":
        arrays, mean, std = _load_fmnist(data_dir, download), FMNIST_MEAN, FMNIST_STD
    else:
        raise UserError(f"unknown image dataset {name!r}; known: {', '.join(DATASETS)}")
    if train_size is not None:
        n = len(arrays["y_train"])
        if not 1 <= train_size <= n:
            raise UserError(f"--train_size {train_size}: {name} has {n} training images; "
                            f"use 1..{n}")
        for k in ("x_train", "y_train"):
            arrays[k] = arrays[k][:train_size]
    out = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}
    for k in ("y_train", "y_test"):
        out[k] = out[k].long()
    num_classes = CIFAR[name][4] if name in CIFAR else 10
    return dict(out, mean=mean, std=std, num_classes=num_classes)


def _load_cifar(name, data_dir, download):
    folder, train_files, test_files, label_key, classes = CIFAR[name]
    root = data_dir / folder
    missing = [f for f in train_files + test_files if not (root / f).is_file()]
    if missing and download:
        from torchvision import datasets  # only here: importing torchvision is slow
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:  # one archive holds both splits; torchvision checks its md5 here
            cls(str(data_dir), download=True)
        except Exception as e:  # URLError, OSError, RuntimeError (bad checksum) ...
            raise UserError(f"downloading {name} into {data_dir} failed ({e}); "
                            f"check the network or fetch cifar-*-python.tar.gz by hand")
        missing = [f for f in train_files + test_files if not (root / f).is_file()]
    if missing:
        raise UserError(f"{name} not found: {root / missing[0]} is missing; rerun with --download "
                        f"or point --data_dir at the folder holding {folder}/")
    out = {}
    for split, files in (("train", train_files), ("test", test_files)):
        parts = [_read_cifar_file(root / f, label_key, classes) for f in files]
        out[f"x_{split}"] = np.concatenate([x for x, _ in parts]).reshape(-1, 3, 32, 32)
        out[f"y_{split}"] = np.concatenate([y for _, y in parts])
    return out


def _read_cifar_file(path, label_key, classes):
    """One pickle -> data (n, 3072) uint8, labels (n,) int64, after the structural checks."""
    fix = f"delete {path} and rerun with --download"
    try:
        with open(path, "rb") as f:
            # latin1 as torchvision: the originals are Python 2 pickles holding numpy arrays.
            d = pickle.load(f, encoding="latin1")
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        x, y = np.asarray(d["data"]), np.asarray(d[label_key])
    except Exception as e:
        raise UserError(f"{path} is not a CIFAR pickle with data and {label_key} ({e!r}); {fix}")
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(x) == 0:
        raise UserError(f"{path}: data is {x.dtype} {x.shape}, expected uint8 (n, 3072); {fix}")
    if y.shape != (len(x),) or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= classes:
        raise UserError(f"{path}: {label_key} must be {len(x)} integers in [0, {classes}), got "
                        f"{y.dtype} {y.shape}; {fix}")
    return x, y.astype(np.int64)


def _find_fmnist(folder):
    """{key: path} of the four IDX files in folder (plain or .gz), or None if any is missing."""
    found = {}
    for key, stem in FMNIST_FILES.items():
        paths = [folder / stem, folder / f"{stem}.gz"]
        found[key] = next((p for p in paths if p.is_file()), None)
    return found if all(found.values()) else None


def _load_fmnist(data_dir, download):
    local = data_dir / "FashionMNIST" / "raw"
    files = _find_fmnist(local) or _find_fmnist(FMNIST_SYSTEM_DIR)
    if files is None and download:
        from torchvision import datasets
        try:  # fetches all four files, md5-checked
            datasets.FashionMNIST(str(data_dir), download=True)
        except Exception as e:
            raise UserError(f"downloading fashion_mnist into {data_dir} failed ({e}); "
                            f"try `apt-get install dataset-fashion-mnist`")
        files = _find_fmnist(local)
    if files is None:
        raise UserError(f"fashion_mnist not found in {local} nor {FMNIST_SYSTEM_DIR}; rerun with "
                        f"--download or `apt-get install dataset-fashion-mnist`")
    out = {k: _read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),) or not len(y) or y.max() >= 10:
            raise UserError(f"fashion_mnist {split}: images {x.shape}, labels {y.shape}, expected "
                            f"(n, 28, 28) and n labels in [0, 10); replace {files[f'x_{split}']}")
        # (n, 28, 28) -> (n, 1, 32, 32), 2 zero rows/columns on each side
        out[f"x_{split}"] = np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None]
        out[f"y_{split}"] = y.astype(np.int64)
    return out


def _read_idx(path):
    """Parse an IDX file: 0x00 0x00, type 0x08 (uint8), ndim, ndim big-endian int32 sizes, data."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path} ({e}); reinstall or delete it and rerun with --download")
    bad = UserError(f"{path} is not a uint8 IDX file of the size its header states; "
                    f"reinstall or delete it and rerun with --download")
    if len(raw) < 4 or raw[:3] != b"\0\0\x08" or len(raw) < 4 + 4 * raw[3]:
        raise bad
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", ndim, 4))
    if not shape or len(raw) != 4 + 4 * ndim + int(np.prod(shape)):
        raise bad
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def normalize(x, mean, std, dtype=torch.float32):
    """uint8 images (N, C, H, W) -> dtype, (x / 255 - mean) / std per channel.
    mean, std: sequences, or (1, C, 1, 1) tensors of `dtype` on x's device (used as they are:
    no host-to-device copy, so the call can be captured in a CUDA graph)."""
    mean = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return (x.to(dtype) / 255 - mean) / std


def crop_flip(x, dx, dy, flip, pad=4):
    """Crop each image from its zero-padded copy at offset (dy, dx), then mirror it if flip.

    x: (N, C, H, W) any dtype; dx, dy: (N,) int64 in [0, 2 pad]; flip: (N,) bool. Output image n is
    pad(x[n])[:, dy:dy+H, dx:dx+W], flipped left-right where flip[n]: one gather for the batch.
    """
    N, C, H, W = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (N, C, H + 2 pad, W + 2 pad), zeros
    i, j = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    rows = dy.view(N, 1) + i  # (N, H)
    cols = dx.view(N, 1) + torch.where(flip.view(N, 1), W - 1 - j, j)  # (N, W), mirrored if flip
    n, c = torch.arange(N, device=x.device), torch.arange(C, device=x.device)
    return xp[n.view(N, 1, 1, 1), c.view(1, C, 1, 1), rows.view(N, 1, H, 1), cols.view(N, 1, 1, W)]


def augment_draws(n, pad=4, flip=True, generator=None, device=None):
    """The random crop offsets and flips of n images: a (3, n) int64 tensor (dx, dy, flip as 0/1).

    Drawn on the generator's device (CPU for a CPU generator, so the draws are the same on any
    device), then moved to `device` (default: the generator's).
    """
    dev = generator.device if generator is not None else device
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    # drawn even when unused, so that the generator advances the same way either way
    flips = (torch.rand(n, generator=generator, device=dev) < 0.5) & flip
    return torch.stack([dx, dy, flips.long()]).to(device or dev)


RA_OPS = 2  # RandAugment's operations per image (docs/protocol.md section 3: num_ops 2, magnitude 14)
RA_MAGNITUDE = 14
DRAW_ROWS = {"none": 0, "crop_flip": 3, "randaugment": 3 + 2 * RA_OPS}  # rows of `epoch_draws`


def epoch_draws(augment, n, generator=None, device=None):
    """An epoch's augmentation draws for n images in batch order, for the recipe's --augment: None
    (none), or an int64 tensor (DRAW_ROWS[augment], n): crop offsets and flips (`augment_draws`)
    and, for randaugment, each image's operation and sign at each of its RA_OPS positions
    (data/randaugment.py), drawn after them from the same generator."""
    if augment == "none":
        return None
    draws = augment_draws(n, generator=generator, device=device)
    if augment == "randaugment":
        from data.randaugment import randaugment_draws
        ra = randaugment_draws(n, num_ops=RA_OPS, magnitude=RA_MAGNITUDE, generator=generator, device=device)
        draws = torch.cat([draws, ra.reshape(-1, n)])
    return draws


def augment_batch(x, draws, mean, std):
    """uint8 images x (N, C, H, W) augmented by their `epoch_draws` columns (RandAugment first, then
    crop with zero padding and flip), then normalised: float32 (N, C, H, W)."""
    if len(draws) > 3:
        from data.randaugment import randaugment
        x = randaugment(x, draws[3:].view(2, RA_OPS, -1), num_ops=RA_OPS, magnitude=RA_MAGNITUDE)
    return normalize(crop_flip(x, draws[0], draws[1], draws[2].bool()), mean, std)


def augment(x, pad=4, flip=True, generator=None):
    """Random crop with zero padding `pad` and (if flip) random horizontal flip, per image.
    x: (N, C, H, W) on any device; the draws: `augment_draws`."""
    dx, dy, flips = augment_draws(len(x), pad, flip, generator, x.device)
    return crop_flip(x, dx, dy, flips.bool(), pad)


def batches(n, batch_size, generator, device, drop_last=False):
    """Yield (batch_size,) int64 index tensors on `device` that walk one random permutation of
    range(n); the last batch is shorter unless drop_last. The permutation is drawn on the
    generator's device and copied once per epoch."""
    dev = generator.device if generator is not None else device
    perm = torch.randperm(n, generator=generator, device=dev).to(device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield perm[start:start + batch_size]
