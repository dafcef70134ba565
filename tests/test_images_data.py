"""data/images.py: CIFAR files in torchvision's exact format, Fashion-MNIST IDX files, bad files,
and batched augmentation against a naive per-image reference."""
import gzip
import pickle

import numpy as np
import pytest
import torch

import data.images as images
from data.images import augment, batches, crop_flip, load_images, normalize
from core.errors import UserError

# name -> (folder, {file: images in it}, label key, classes): torchvision's layout, tiny
TINY = {"cifar10": ("cifar-10-batches-py",
                    {**{f"data_batch_{i}": 4 for i in range(1, 6)}, "test_batch": 10}, b"labels", 10),
        "cifar100": ("cifar-100-python", {"train": 20, "test": 10}, b"fine_labels", 100)}


def write_cifar(root, name, seed=0, sizes=None):
    """Write tiny CIFAR pickles as the originals are laid out; returns {file: (data, labels)}.
    sizes: {file: images} to override TINY's."""
    folder, files, key, classes = TINY[name]
    files = sizes or files
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True)
    out = {}
    for f, n in files.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n).tolist()
        d = {b"batch_label": f.encode(), key: labels, b"data": data,
             b"filenames": [b"x.png"] * n}
        if name == "cifar100":
            d[b"coarse_labels"] = [y // 5 for y in labels]
        with open(root / folder / f, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
        out[f] = (data, labels)
    return out


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_tiny(tmp_path, name):
    written = write_cifar(tmp_path, name)
    d = load_images(name, tmp_path)
    assert d["x_train"].shape == (20, 3, 32, 32) and d["x_test"].shape == (10, 3, 32, 32)
    assert d["x_train"].dtype == torch.uint8 and d["y_train"].dtype == torch.int64
    assert d["num_classes"] == TINY[name][3] and len(d["mean"]) == len(d["std"]) == 3
    train = [written[f] for f in written if "test" not in f]  # file order = image order
    labels = sum((y for _, y in train), [])
    test_file = "test_batch" if name == "cifar10" else "test"
    assert d["y_train"].tolist() == labels and d["y_test"].tolist() == written[test_file][1]
    rows = np.concatenate([x for x, _ in train])
    # channel order: a row is 1024 R, then 1024 G, then 1024 B values, each image row-major
    for n, c, i, j in [(0, 0, 0, 0), (0, 1, 0, 0), (3, 2, 31, 31), (7, 1, 5, 17), (19, 0, 30, 2)]:
        assert d["x_train"][n, c, i, j].item() == rows[n, 1024 * c + 32 * i + j]
    small = load_images(name, tmp_path, train_size=7)
    assert torch.equal(small["x_train"], d["x_train"][:7]) and small["y_train"].tolist() == labels[:7]
    assert torch.equal(small["x_test"], d["x_test"])
    for bad in (0, 21):
        with pytest.raises(UserError, match="train_size"):
            load_images(name, tmp_path, train_size=bad)


def test_missing_dataset_names_path(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"cifar-10-batches-py.*--download"):
        load_images("cifar10", tmp_path)
    monkeypatch.setattr(images, "FMNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as e:
        load_images("fashion_mnist", tmp_path)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(e.value)
    with pytest.raises(UserError, match="unknown image dataset"):
        load_images("mnist", tmp_path)


def _rewrite(path, change):
    with open(path, "rb") as f:
        d = pickle.load(f)
    change(d)
    with open(path, "wb") as f:
        pickle.dump(d, f)


BAD = {"garbage": None,
       "short rows": lambda d: d.update({b"data": d[b"data"][:, :3000]}),
       "float data": lambda d: d.update({b"data": d[b"data"].astype(np.float32)}),
       "label range": lambda d: d.update({b"labels": [10] * len(d[b"labels"])}),
       "label count": lambda d: d.update({b"labels": d[b"labels"][:-1]}),
       "no labels": lambda d: d.pop(b"labels")}


@pytest.mark.parametrize("kind", BAD)
def test_corrupt_cifar(tmp_path, kind):
    write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    if BAD[kind] is None:
        path.write_bytes(b"not a pickle at all")
    else:
        _rewrite(path, BAD[kind])
    with pytest.raises(UserError, match="test_batch"):
        load_images("cifar10", tmp_path)


def _idx(array):
    """IDX bytes of a uint8 array: 0, 0, type 0x08, ndim, big-endian int32 sizes, data."""
    return bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes() + array.tobytes()


def test_fashion_mnist_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = {s: rng.integers(1, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 6), ("t10k", 4))}
    y = {s: rng.integers(0, 10, len(x[s]), dtype=np.uint8) for s in x}
    for s in x:  # one split gzipped, the other plain: both are accepted
        for kind, array in (("images-idx3", x[s]), ("labels-idx1", y[s])):
            path = raw / f"{s}-{kind}-ubyte"
            if s == "train":
                with gzip.open(f"{path}.gz", "wb") as f:
                    f.write(_idx(array))
            else:
                path.write_bytes(_idx(array))
    d = load_images("fashion_mnist", tmp_path)
    assert d["x_train"].shape == (6, 1, 32, 32) and d["x_test"].shape == (4, 1, 32, 32)
    assert torch.equal(d["x_train"][:, 0, 2:30, 2:30], torch.from_numpy(x["train"]))
    assert d["y_test"].tolist() == y["t10k"].tolist() and d["y_test"].dtype == torch.int64
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx(x["t10k"])[:-5])  # truncated
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte"):
        load_images("fashion_mnist", tmp_path)


@pytest.mark.skipif(not (images.FMNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_system(tmp_path):
    d = load_images("fashion_mnist", tmp_path)
    assert d["x_train"].shape == (60000, 1, 32, 32) and d["x_test"].shape == (10000, 1, 32, 32)
    for x in (d["x_train"], d["x_test"]):  # 2-pixel zero border from the 28 -> 32 padding
        assert x[..., :2, :].max() == 0 and x[..., 30:, :].max() == 0
        assert x[..., :2].max() == 0 and x[..., 30:].max() == 0
    assert sorted(d["y_train"].unique().tolist()) == list(range(10)) and d["y_test"].max() == 9
    x = d["x_train"].double() / 255
    assert abs(x.mean().item() - d["mean"][0]) < 1e-4 and abs(x.std().item() - d["std"][0]) < 1e-4


def naive_crop_flip(x, dx, dy, flip, pad):
    out = []
    for n in range(len(x)):
        C, H, W = x[n].shape
        padded = torch.zeros(C, H + 2 * pad, W + 2 * pad, dtype=x.dtype)
        padded[:, pad:pad + H, pad:pad + W] = x[n]
        crop = padded[:, dy[n]:dy[n] + H, dx[n]:dx[n] + W]
        out.append(crop.flip(-1) if flip[n] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("shape,pad", [((16, 3, 32, 32), 4), ((6, 2, 8, 12), 3)])
def test_crop_flip_matches_naive(shape, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    N = shape[0]
    dx = torch.randint(0, 2 * pad + 1, (N,), generator=g)
    dy = torch.randint(0, 2 * pad + 1, (N,), generator=g)
    dx[:2], dy[:2] = torch.tensor([0, 2 * pad]), torch.tensor([2 * pad, 0])  # the extremes
    flip = torch.rand(N, generator=g) < 0.5
    flip[:2] = torch.tensor([True, False])
    assert torch.equal(crop_flip(x, dx, dy, flip, pad), naive_crop_flip(x, dx, dy, flip, pad))


def test_augment():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 3, 32, 32), generator=g, dtype=torch.uint8)
    a = augment(x, generator=torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, augment(x, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(a, augment(x, generator=torch.Generator().manual_seed(6)))
    assert torch.equal(augment(x, pad=0, flip=False), x)
    # augment = crop_flip with draws dx, dy, flips in that order from the generator
    g = torch.Generator().manual_seed(5)
    dx, dy = torch.randint(0, 9, (32,), generator=g), torch.randint(0, 9, (32,), generator=g)
    flip = torch.rand(32, generator=g) < 0.5
    assert torch.equal(a, naive_crop_flip(x, dx, dy, flip, 4))
    assert torch.equal(augment(x.float(), generator=torch.Generator().manual_seed(5)), a.float())


def test_normalize_known_answer():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalize(x, (0.5, 0.5, 0.2), (0.5, 0.25, 0.1))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.view(3), torch.tensor([-1.0, 2.0, 0.0]), atol=1e-6, rtol=0)


def test_batches():
    idx = list(batches(10, 4, torch.Generator().manual_seed(0), "cpu"))
    assert [len(b) for b in idx] == [4, 4, 2] and idx[0].dtype == torch.int64
    assert sorted(torch.cat(idx).tolist()) == list(range(10))
    again = list(batches(10, 4, torch.Generator().manual_seed(0), "cpu"))
    assert all(torch.equal(a, b) for a, b in zip(idx, again))
    full = batches(10, 4, torch.Generator().manual_seed(0), "cpu", drop_last=True)
    assert [len(b) for b in full] == [4, 4]
