"""data/custom.py: a researcher's own data as an .npz or a package.module:function - layouts, sizes,
statistics, and every bad form as one clear line."""
import importlib
import io
import pathlib
import pickle
import sys

import numpy as np
import pytest
import torch

import data.custom as custom
from data.images import load_images
from test_images_data import write_cifar
from core.errors import UserError

def custom_arrays(seed=0, n_train=5, n_test=3, size=(20, 24), channels=3):
    """Tiny arrays in torchvision's dataset.data layout: (N, H, W, C) uint8, or (N, H, W) if channels
    is None; labels 0..6, every test label also in the training split (y_train starts 6, 0, 1)."""
    rng = np.random.default_rng(seed)
    shape = size if channels is None else (*size, channels)
    x_train = rng.integers(0, 256, (n_train, *shape), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, *shape), dtype=np.uint8)
    y_train = rng.integers(0, 6, n_train).astype(np.uint8)  # any integer dtype is accepted
    y_train[:3] = (6, 0, 1)
    y_test = np.arange(n_test, dtype=np.int64) % 7
    y_test[-1] = 6
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_is_custom():
    for spec in ("mine.npz", "some/dir/Mine.NPZ", pathlib.Path("x.npz"), "pkg.mod:load", "m:f"):
        assert custom.is_custom(spec), spec
    for spec in ("cifar10", "fashion_mnist", "tick", "mine.npy", "", None, 3):
        assert not custom.is_custom(spec), spec


def test_custom_npz_colour(tmp_path):
    a = custom_arrays()
    # one known pixel per channel: image 1, row 2, column 3 holds 11, 22, 33 in R, G, B
    a["x_train"][1, 2, 3] = (11, 22, 33)
    d = custom.load_custom(write_npz(tmp_path / "mine.npz", **a))
    assert d["x_train"].shape == (5, 3, 20, 24) and d["x_test"].shape == (3, 3, 20, 24)
    assert d["x_train"].dtype == torch.uint8 and d["x_train"].device.type == "cpu"
    assert d["y_train"].dtype == torch.int64 and d["y_test"].dtype == torch.int64
    assert [d["x_train"][1, c, 2, 3].item() for c in range(3)] == [11, 22, 33]
    assert d["x_train"][1, 0, 3, 2].item() == a["x_train"][1, 3, 2, 0]  # rows and columns not swapped
    assert torch.equal(d["x_test"], torch.from_numpy(a["x_test"]).permute(0, 3, 1, 2))
    assert d["y_train"].tolist() == a["y_train"].tolist() and d["y_test"].tolist() == a["y_test"].tolist()
    assert d["num_classes"] == 7  # 1 + the largest label
    x = a["x_train"] / 255
    np.testing.assert_allclose(d["mean"], x.mean(axis=(0, 1, 2)), rtol=1e-12, atol=0)
    np.testing.assert_allclose(d["std"], x.std(axis=(0, 1, 2)), rtol=1e-12, atol=0)
    assert isinstance(d["mean"], tuple) and all(type(v) is float for v in d["mean"] + d["std"])
    # the same dict as a built-in dataset's
    write_cifar(tmp_path, "cifar10")
    builtin = load_images("cifar10", tmp_path)
    assert list(d) == list(builtin)
    assert all(type(d[k]) is type(builtin[k]) for k in d)


def test_custom_npz_greyscale(tmp_path):
    a = custom_arrays(size=(12, 9), channels=None)
    a["y_train"][:], a["y_test"][:] = 0, 0  # one class only: num_classes is still 2
    d = custom.load_custom(write_npz(tmp_path / "grey.npz", **a))
    assert d["x_train"].shape == (5, 1, 12, 9) and d["x_test"].shape == (3, 1, 12, 9)
    assert torch.equal(d["x_train"][:, 0], torch.from_numpy(a["x_train"]))
    assert len(d["mean"]) == len(d["std"]) == 1 and d["num_classes"] == 2
    np.testing.assert_allclose(d["std"], [(a["x_train"] / 255).std()], rtol=1e-12, atol=0)


CUSTOM_MODULE = '''
import types
import numpy as np
import torch

PATH = {path!r}

def load():
    with np.load(PATH) as f:
        return {{k: f[k] for k in f.files}}

def load_mapping():  # any mapping will do
    return types.MappingProxyType(load())

def load_tensors():  # CPU tensors will do
    return {{k: torch.from_numpy(v) for k, v in load().items()}}

class Loaders:
    @staticmethod
    def load():
        return load()
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """write(source) -> the name of a fresh module in tmp_path, importable through sys.path."""
    names = []

    def write(source, folder=tmp_path):
        name = f"user_data_{len(names)}_{abs(hash(str(folder))) % 10**8}"
        (folder / f"{name}.py").write_text(source)
        names.append(name)
        return name
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates the import caches
    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_custom_function_matches_npz(tmp_path, user_module):
    spec = write_npz(tmp_path / "mine.npz", **custom_arrays())
    ref = custom.load_custom(spec)
    mod = user_module(CUSTOM_MODULE.format(path=spec))
    for fn in ("load", "load_mapping", "load_tensors", "Loaders.load"):
        d = custom.load_custom(f"{mod}:{fn}")
        assert list(d) == list(ref), fn
        for k in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(d[k], ref[k]) and d[k].dtype == ref[k].dtype, (fn, k)
        assert (d["mean"], d["std"], d["num_classes"]) == (ref["mean"], ref["std"], ref["num_classes"])


def test_custom_function_from_current_directory(tmp_path, monkeypatch, user_module):
    """Scripts run as `python train.py` have the repository, not the current directory, on sys.path."""
    spec = write_npz(tmp_path / "mine.npz", **custom_arrays())
    here = tmp_path / "here"
    here.mkdir()
    mod = user_module(CUSTOM_MODULE.format(path=spec), folder=here)
    path = [p for p in sys.path if p not in ("", str(here))]
    monkeypatch.setattr(sys, "path", path)
    monkeypatch.chdir(here)
    importlib.invalidate_caches()
    d = custom.load_custom(f"{mod}:load")
    assert d["x_train"].shape == (5, 3, 20, 24)
    assert sys.path == path  # the current directory was on it for the import only


def test_custom_train_size(tmp_path):
    spec = write_npz(tmp_path / "mine.npz", **custom_arrays())
    full = custom.load_custom(spec)
    small = custom.load_custom(spec, train_size=2)
    assert torch.equal(small["x_train"], full["x_train"][:2])
    assert torch.equal(small["y_train"], full["y_train"][:2])
    assert torch.equal(small["x_test"], full["x_test"]) and torch.equal(small["y_test"], full["y_test"])
    # mean/std come from the whole training set in the file, as a built-in's do not depend on train_size
    assert (small["mean"], small["std"], small["num_classes"]) == (full["mean"], full["std"], 7)
    assert custom.load_custom(spec, train_size=5)["x_train"].shape[0] == 5
    for bad in (0, 6, -1):
        with pytest.raises(UserError, match=r"--train_size .*mine\.npz has 5 training images; use 1\.\.5"):
            custom.load_custom(spec, train_size=bad)


def _changed(**changes):
    """custom_arrays with some arrays replaced (None: removed)."""
    def make(path):
        a = custom_arrays()
        for k, v in changes.items():
            if v is None:
                a.pop(k)
            else:
                a[k] = v(a) if callable(v) else v
        return a
    return make


# name -> (how to write the file at path, a distinctive substring of the error)
BAD_NPZ = {
    "missing file": (lambda path: None, "does not exist"),
    "a folder": (lambda path: path.mkdir(), "is a folder"),
    "garbage": (lambda path: path.write_bytes(b"this is not a zip file"),
                "is not an .npz file (not a zip archive)"),
    "a pickle": (lambda path: path.write_bytes(pickle.dumps(custom_arrays())),
                 "is not an .npz file (not a zip archive)"),
    "empty": (lambda path: path.write_bytes(b""), "is not an .npz file (not a zip archive)"),
    "truncated": (lambda path: path.write_bytes(_npz_bytes(path)[:200]), "is not a readable .npz file"),
    "a .npy": (lambda path: path.write_bytes(_npy_bytes(np.zeros(3))), "holds one .npy array"),
    "array missing": (_changed(y_test=None), "has no array y_test (it has: x_test, x_train, y_train)"),
    "two missing": (_changed(x_train=None, y_train=None),
                    "has no array x_train, y_train (it has: x_test, y_test)"),
    "object array": (_changed(x_train=lambda a: np.array([1, "a"], dtype=object)),
                     "cannot read array x_train"),
    "float images": (_changed(x_train=lambda a: a["x_train"] / 255),
                     "x_train is float64; images must be uint8"),
    "int images": (_changed(x_test=lambda a: a["x_test"].astype(np.int64)),
                   "x_test is int64; images must be uint8"),
    "2-D images": (_changed(x_train=lambda a: a["x_train"][:, :, 0, 0]), "x_train has shape (5, 20) (2-D)"),
    "5-D images": (_changed(x_test=lambda a: a["x_test"][..., None]),
                   "x_test has shape (3, 20, 24, 3, 1) (5-D)"),
    "channels first": (_changed(x_train=lambda a: a["x_train"].transpose(0, 3, 1, 2),
                                x_test=lambda a: a["x_test"].transpose(0, 3, 1, 2)),
                       "looks like (N, C, H, W)"),
    "no images": (_changed(x_train=lambda a: a["x_train"][:0], y_train=lambda a: a["y_train"][:0]),
                  "needs at least one image"),
    "float labels": (_changed(y_train=lambda a: a["y_train"].astype(np.float32)),
                     "y_train is float32; labels must be integer"),
    "bool labels": (_changed(y_test=lambda a: a["y_test"] > 2), "y_test is bool; labels must be integer"),
    "one-hot labels": (_changed(y_train=lambda a: np.eye(7, dtype=np.int64)[a["y_train"]]),
                       "y_train has shape (5, 7); labels must be 1-D"),
    "label count": (_changed(y_train=lambda a: a["y_train"][:4]),
                    "y_train has 4 labels but x_train has 5 images"),
    "negative label": (_changed(y_test=lambda a: np.array([0, -1, 2])),
                       "y_test has the negative label -1 (index 1)"),
    "label range": (_changed(y_train=lambda a: np.array([0, 1, 2, 3, 10**9])),
                    "has the label 1000000000, out of range"),
    "huge uint64 label": (_changed(y_test=lambda a: np.array([0, 1, 2**64 - 1], dtype=np.uint64)),
                          "out of range"),
    "test size differs": (_changed(x_test=lambda a: a["x_test"].transpose(0, 2, 1, 3)),
                          "x_train images are 20x24x3 but x_test images are 24x20x3"),
    "test channels differ": (_changed(x_test=lambda a: a["x_test"][..., 0]),
                             "x_train images are 20x24x3 but x_test images are 20x24x1"),
}


def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npz_bytes(path):
    """The bytes of a valid file (for corrupting it), written next to path."""
    good = path.with_name("good.npz")
    np.savez(good, **custom_arrays())
    return good.read_bytes()


def _write_bad_npz(path, make):
    result = make(path)
    if isinstance(result, dict):
        np.savez(path, **result)


@pytest.mark.parametrize("kind", BAD_NPZ)
def test_custom_bad_npz(tmp_path, kind):
    make, message = BAD_NPZ[kind]
    path = tmp_path / "mine.npz"
    _write_bad_npz(path, make)
    with pytest.raises(UserError) as e:
        custom.load_custom(str(path))
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_custom_label_dtypes_accepted(tmp_path):
    """Any integer label dtype that holds the labels is fine (uint8, int32, uint64)."""
    a = custom_arrays()
    for dtype in (np.uint8, np.int32, np.uint64):
        spec = write_npz(tmp_path / "mine.npz", **dict(a, y_train=a["y_train"].astype(dtype)))
        assert custom.load_custom(spec)["y_train"].tolist() == a["y_train"].tolist()


# name -> (spec, or a module source whose `load` is the spec; a distinctive substring of the error)
BAD_FUNCTION = {
    "no colon": ("my_data_module", "neither an .npz path nor of the form package.module:function"),
    "empty module": (":load", "neither an .npz path nor"),
    "empty function": ("my_data_module:", "neither an .npz path nor"),
    "two colons": ("a:b:c", "neither an .npz path nor"),
    "a file path": ("data/mine.py:load", "is a file path, not a module name; give mine:load"),
    "not a name": ("my-data:load", "must be dotted Python names"),
    "not importable": ("no_such_module_4711:load",
                       "cannot import module no_such_module_4711 (ModuleNotFoundError: No module named "
                       "'no_such_module_4711')"),
    "syntax error": ("def load(:\n", "(SyntaxError: "),
    "raises on import": ("raise RuntimeError('no data here\\nsecond line')\n",
                         "(RuntimeError: no data here); run from the folder"),
    "exits on import": ("import sys\nsys.exit(3)\n", "cannot import module"),
    "no attribute": ("def other():\n    pass\n", "has no attribute load"),
    "not callable": ("load = 3\n", "load is not callable (it is of type int)"),
    "raises": ("def load():\n    raise ValueError('bad labels file')\n",
               "load() raised ValueError: bad labels file"),
    "takes arguments": ("def load(path):\n    pass\n", "load() raised TypeError"),
    "returns a list": ("def load():\n    return [1, 2]\n", "load() returned an object of type list"),
    "returns None": ("def load():\n    pass\n", "load() returned an object of type NoneType"),
    "arrays missing": ("import numpy as np\ndef load():\n    return {'x_train': np.zeros((1, 2, 2), np.uint8)}\n",
                       "load() returned no y_train, x_test, y_test (it has: x_train)"),
    "not arrays": ("class Bad:\n    def __array__(self, *a, **k):\n        raise RuntimeError('nope')\n"
                   "def load():\n    return dict(x_train=Bad(), y_train=0, x_test=0, y_test=0)\n",
                   "load()'s x_train is not an array (RuntimeError: nope)"),
    "bad arrays": ("import numpy as np\ndef load():\n    return dict(x_train=np.zeros((2, 4, 4)), y_train=[0, 1],"
                   " x_test=np.zeros((1, 4, 4), np.uint8), y_test=[0])\n",
                   "x_train is float64; images must be uint8"),
}


def _bad_function_spec(kind, user_module):
    spec, message = BAD_FUNCTION[kind]
    if "\n" in spec:  # a module source
        spec = f"{user_module(spec)}:load"
    return spec, message


@pytest.mark.parametrize("kind", BAD_FUNCTION)
def test_custom_bad_function(kind, user_module):
    spec, message = _bad_function_spec(kind, user_module)
    with pytest.raises(UserError) as e:
        custom.load_custom(spec)
    assert message in str(e.value) and spec in str(e.value) and "\n" not in str(e.value)


def test_custom_errors_are_all_user_errors(tmp_path, user_module):
    """Every bad input above, and a valid file corrupted byte by byte or cut short, ends in a one-line
    UserError (printed by main_guard without a traceback) or loads; no other exception escapes."""
    specs = []
    for i, (make, _) in enumerate(BAD_NPZ.values()):
        path = tmp_path / f"bad{i}" / "mine.npz"
        path.parent.mkdir()
        _write_bad_npz(path, make)
        specs.append(str(path))
    specs += [_bad_function_spec(kind, user_module)[0] for kind in BAD_FUNCTION]
    good = _npz_bytes(tmp_path / "x.npz")
    rng = np.random.default_rng(0)
    for i, cut in enumerate([1, 4, 30, 64, 128, 400, len(good) // 2, len(good) - 22, len(good) - 1]):
        path = tmp_path / f"cut{i}.npz"
        path.write_bytes(good[:cut])
        specs.append(str(path))
    for i, pos in enumerate(rng.choice(len(good), 60, replace=False)):
        path = tmp_path / f"flip{i}.npz"
        path.write_bytes(good[:pos] + bytes([good[pos] ^ 0xFF]) + good[pos + 1:])
        specs.append(str(path))
    errors = 0
    for spec in specs:
        try:
            custom.load_custom(spec)
        except UserError as e:
            assert "\n" not in str(e) and str(e).strip(), spec
            errors += 1
        except BaseException as e:  # noqa: B036 - anything else would print a traceback
            pytest.fail(f"{spec}: {type(e).__name__} escaped: {e}")
    assert errors >= len(BAD_NPZ) + len(BAD_FUNCTION)
