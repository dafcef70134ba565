"""A researcher's own image data, without editing the repository: `--dataset path/to/file.npz` or
`--dataset package.module:function` (data/__init__.py makes a record of either).

    d = load_custom("my_data.npz")       # the same dict as data.images.load_images
    d = load_custom("my_pkg.data:load")   # a function returning the four arrays

The arrays: x_train, y_train, x_test, y_test; uint8 images in the layout of torchvision's
`dataset.data`, (N, H, W, C) or (N, H, W) for greyscale, of any size; integer labels from 0. Every
problem with them is a UserError of one line naming the file and the fix.
"""
import collections.abc
import importlib
import os
import pathlib
import sys

import numpy as np
import torch

from core.errors import UserError

# A researcher's own data (`load_custom`): the four arrays an .npz or a function must provide, and a
# cap on the class count that catches labels that are ids rather than class indices (a head this
# wide is almost certainly a mistake; ImageNet-21k has 21841 classes).
CUSTOM_KEYS = ("x_train", "y_train", "x_test", "y_test")
VAL_KEYS = ("x_val", "y_val")  # optional, together: a validation set of the data's own
CUSTOM_MAX_CLASSES = 100_000
_CUSTOM_FORMAT = ("x_train, y_train, x_test, y_test: uint8 images (N, H, W, C) or (N, H, W), "
                  "integer labels (N,) from 0")


def is_custom(spec):
    """True when `spec` names a researcher's own data for `load_custom`: a path ending in .npz, or
    anything with a colon (package.module:function). Registry names have neither."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    spec = os.fspath(spec)
    return isinstance(spec, str) and (spec.lower().endswith(".npz") or ":" in spec)


def load_custom(spec, train_size=None, device="cpu"):
    """A researcher's own image data, in the same dict as `load_images`: x_train/x_test uint8
    (N, C, H, W) on `device`, y_train/y_test int64 (N,), mean/std (tuples of C floats), num_classes.

    spec: `path/to/file.npz` (read with np.load(allow_pickle=False); `~` is expanded), or
    `package.module:function`, a module importable from sys.path or the current directory whose
    function takes no arguments and returns a dict (any mapping) of the same arrays (numpy arrays
    or CPU tensors). The arrays, as torchvision's `dataset.data` / `.targets`:
      x_train, x_test: uint8 (N, H, W, C), or (N, H, W) for greyscale (C = 1); any H, W, but the
                       same (H, W, C) in both splits. Stored channels-last, returned (N, C, H, W).
      y_train, y_test: 1-D integer class indices from 0, one per image.
    num_classes = 1 + the largest label of both splits, at least 2.
    mean, std: per channel over all pixels of x_train / 255 (std: population std, float64), computed
    from the *whole* training set in the file, before train_size: a built-in dataset's mean/std do
    not depend on train_size either, so runs on different subsets normalise their inputs alike.
    train_size: keep only the first this many training images (the test set stays whole).
    Any bad input (missing file, not an npz, missing or malformed array, failing import or
    function) is a one-line UserError naming the spec and the fix.
    """
    spec = os.fspath(spec)
    if spec.lower().endswith(".npz"):
        arrays = _read_custom_npz(spec)
    else:
        arrays = _call_custom(spec)
    arrays = _check_custom(spec, arrays)
    mean, std = _channel_stats(arrays["x_train"])
    num_classes = max(2, 1 + int(max(arrays["y_train"].max(), arrays["y_test"].max())))
    if train_size is not None:
        n = len(arrays["y_train"])
        if not 1 <= train_size <= n:
            raise UserError(f"--train_size {train_size}: {spec} has {n} training images; use 1..{n}")
        for k in ("x_train", "y_train"):
            arrays[k] = arrays[k][:train_size]
    out = {}
    for k in arrays:
        # (N, H, W, C) -> (N, C, H, W); labels are already int64 copies
        v = arrays[k].transpose(0, 3, 1, 2) if k.startswith("x") else arrays[k]
        v = np.ascontiguousarray(v)
        if not v.flags.writeable:  # e.g. a function's np.frombuffer array: torch wants writable memory
            v = v.copy()
        out[k] = torch.from_numpy(v).to(device)
    return dict(out, mean=mean, std=std, num_classes=num_classes)


def _one_line(e):
    """An exception as `Type: first line of its message`, for a one-line UserError."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _keys_list(keys):
    keys = sorted(str(k) for k in keys)
    return ", ".join(keys) if keys else "nothing"


def _read_custom_npz(spec):
    """The four arrays of an .npz file, as numpy arrays (not yet checked)."""
    path = pathlib.Path(spec).expanduser()
    save = "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"dataset {spec} {what}; give the path of an .npz file written with {save}")
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read {spec} ({_one_line(e)}); check its permissions")
    # np.load gets our file object, not the path: it leaks its own handle when a damaged zip fails.
    with fh:
        # An .npz is a zip archive (PK..); np.load would take anything else for a pickle and refuse
        # it with advice to allow pickles, which is not what to do here.
        if not fh.read(6).startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            raise UserError(f"{spec} is not an .npz file (not a zip archive); write it with {save}")
        fh.seek(0)
        try:
            f = np.load(fh, allow_pickle=False)
        except Exception as e:  # a damaged zip (BadZipFile), a cut .npy (ValueError, EOFError) ...
            raise UserError(f"{spec} is not a readable .npz file ({_one_line(e)}); write it with {save}")
        if isinstance(f, np.ndarray):  # an .npy file renamed to .npz
            raise UserError(f"{spec} holds one .npy array, not an .npz archive of four; write it with {save}")
        with f:
            missing = [k for k in CUSTOM_KEYS if k not in f.files]
            if missing:
                raise UserError(f"{spec} has no array {', '.join(missing)} (it has: {_keys_list(f.files)}); "
                                f"write all four with {save}")
            given = [k for k in VAL_KEYS if k in f.files]
            if len(given) == 1:
                raise UserError(f"{spec} has {given[0]} but not {({*VAL_KEYS} - {*given}).pop()}; a validation set "
                                f"needs both (or neither: then train.py holds out --val_size of x_train)")
            out = {}
            for k in CUSTOM_KEYS + tuple(given):
                try:  # object arrays (pickles) are refused here; a damaged member fails here
                    out[k] = f[k]
                except Exception as e:
                    raise UserError(f"{spec}: cannot read array {k} ({_one_line(e)}); save plain numeric "
                                    f"arrays with {save}")
    return out


def _call_custom(spec):
    """Import package.module, call its function and return the four arrays (not yet checked)."""
    usage = "give path/to/file.npz or package.module:function"
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name or ":" in fn_name:
        raise UserError(f"dataset {spec!r} is neither an .npz path nor of the form package.module:function; "
                        f"{usage}")
    if mod_name.endswith(".py") or "/" in mod_name or os.sep in mod_name:
        stem = pathlib.Path(mod_name).stem
        raise UserError(f"dataset {spec!r}: {mod_name} is a file path, not a module name; give "
                        f"{stem}:{fn_name} and run from its folder (or put the folder on PYTHONPATH)")
    if not all(p.isidentifier() for p in mod_name.split(".") + fn_name.split(".")):
        raise UserError(f"dataset {spec!r}: {mod_name!r} and {fn_name!r} must be dotted Python names; "
                        f"{usage}")
    # The scripts run as `python train.py`, so sys.path[0] is the repository, not the current
    # directory; look there too (last, so that the repository's own modules win), for this import only.
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(mod_name)
    except (Exception, SystemExit) as e:  # ImportError, SyntaxError, whatever its top level raises
        raise UserError(f"dataset {spec}: cannot import module {mod_name} ({_one_line(e)}); run from the "
                        f"folder that holds it or put that folder on PYTHONPATH")
    finally:
        if added and cwd in sys.path:
            del sys.path[len(sys.path) - 1 - sys.path[::-1].index(cwd)]  # the entry we appended
    fn = module
    for part in fn_name.split("."):
        if not hasattr(fn, part):
            where = getattr(module, "__file__", None) or mod_name
            raise UserError(f"dataset {spec}: module {mod_name} ({where}) has no attribute {fn_name}; "
                            f"define def {fn_name.split('.')[-1]}(): return dict(x_train=..., y_train=..., "
                            f"x_test=..., y_test=...)")
        fn = getattr(fn, part)
    if not callable(fn):
        raise UserError(f"dataset {spec}: {fn_name} is not callable (it is of type {type(fn).__name__}); "
                        f"it must be a function without arguments that returns the arrays")
    try:
        result = fn()
    except (Exception, SystemExit) as e:
        raise UserError(f"dataset {spec}: {fn_name}() raised {_one_line(e)}; fix it (call it in Python "
                        f"to see the traceback)")
    if not isinstance(result, collections.abc.Mapping):
        raise UserError(f"dataset {spec}: {fn_name}() returned an object of type {type(result).__name__}; "
                        f"it must return a dict of {_CUSTOM_FORMAT}")
    missing = [k for k in CUSTOM_KEYS if k not in result]
    if missing:
        raise UserError(f"dataset {spec}: {fn_name}() returned no {', '.join(missing)} (it has: "
                        f"{_keys_list(result.keys())}); return a dict of {_CUSTOM_FORMAT}")
    given = [k for k in VAL_KEYS if k in result]
    if len(given) == 1:
        raise UserError(f"dataset {spec}: {fn_name}() returned {given[0]} but not {({*VAL_KEYS} - {*given}).pop()}; "
                        f"a validation set needs both (or neither)")
    out = {}
    for k in CUSTOM_KEYS + tuple(given):
        try:
            v = result[k]
            out[k] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        except Exception as e:
            raise UserError(f"dataset {spec}: {fn_name}()'s {k} is not an array ({_one_line(e)}); "
                            f"return numpy arrays")
    return out


def _check_custom(spec, arrays):
    """The structural checks of `load_custom`; returns images as (N, H, W, C) uint8, labels int64."""
    out = {}
    for split in [s for s in ("train", "val", "test") if f"x_{s}" in arrays]:
        xk, yk = f"x_{split}", f"y_{split}"
        x, y = arrays[xk], arrays[yk]
        if x.dtype != np.uint8:
            raise UserError(f"{spec}: {xk} is {x.dtype}; images must be uint8 in 0..255 (from floats in "
                            f"[0, 1]: (x * 255).round().astype(np.uint8))")
        if x.ndim not in (3, 4):
            raise UserError(f"{spec}: {xk} has shape {x.shape} ({x.ndim}-D); images must be (N, H, W, C), "
                            f"or (N, H, W) for greyscale, as torchvision's dataset.data")
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1] in (1, 3, 4) and x.shape[3] > 4:  # few "rows", many "channels": channels first
            raise UserError(f"{spec}: {xk} has shape {x.shape}, which looks like (N, C, H, W); store "
                            f"images channels-last (N, H, W, C): x.transpose(0, 2, 3, 1)")
        if 0 in x.shape:
            raise UserError(f"{spec}: {xk} has shape {x.shape}; each split needs at least one image of "
                            f"at least 1x1 pixels")
        if y.dtype.kind not in "iu":
            raise UserError(f"{spec}: {yk} is {y.dtype}; labels must be integer class indices from 0 "
                            f"(e.g. y.astype(np.int64))")
        if y.ndim != 1:
            raise UserError(f"{spec}: {yk} has shape {y.shape}; labels must be 1-D, one class index per "
                            f"image (one-hot: y.argmax(1); (N, 1): y.ravel())")
        if len(y) != len(x):
            raise UserError(f"{spec}: {yk} has {len(y)} labels but {xk} has {len(x)} images; give one "
                            f"label per image")
        if y.min() < 0:
            raise UserError(f"{spec}: {yk} has the negative label {int(y.min())} (index {int(y.argmin())}); "
                            f"labels are class indices from 0")
        if int(y.max()) >= CUSTOM_MAX_CLASSES:
            raise UserError(f"{spec}: {yk} has the label {int(y.max())}, out of range (at most "
                            f"{CUSTOM_MAX_CLASSES - 1}): labels are class indices 0..C-1; remap both splits "
                            f"together, e.g. with np.unique(..., return_inverse=True)")
        out[xk], out[yk] = x, y.astype(np.int64)
    for k in [k for k in ("x_val", "x_test") if k in out]:
        if out["x_train"].shape[1:] != out[k].shape[1:]:
            size = {j: "x".join(map(str, out[j].shape[1:])) for j in ("x_train", k)}
            raise UserError(f"{spec}: x_train images are {size['x_train']} but {k} images are {size[k]} "
                            f"(H x W x C); every split needs the same size and channels")
    for k in [k for k in ("y_val", "y_test") if k in out]:
        unseen = np.setdiff1d(np.unique(out[k]), np.unique(out["y_train"]))
        if len(unseen):
            y = out["y_train"]
            raise UserError(f"{spec}: {k} has the label {int(unseen[0])}, which y_train never has (it has "
                            f"{len(np.unique(y))} classes, {int(y.min())}..{int(y.max())}): a class the model never "
                            f"sees in training; remap the labels or drop those images")
    return out


def _channel_stats(x):
    """Per-channel mean and population std of x / 255 over all pixels of x (N, H, W, C) uint8, as
    tuples of python floats. Exact in float64 from per-channel histograms of the 256 values, counted
    in chunks, so that no float copy of the whole dataset is made."""
    C = x.shape[-1]
    flat = x.reshape(-1, C)  # (N H W, C); a view when x is contiguous
    counts = np.zeros(256 * C, np.int64)
    offsets = np.arange(C)
    for start in range(0, len(flat), 1 << 20):
        chunk = flat[start:start + (1 << 20)].astype(np.int64)
        counts += np.bincount((chunk * C + offsets).ravel(), minlength=256 * C)  # index value * C + c
    counts = counts.reshape(256, C).astype(np.float64)
    n = counts.sum(0)  # (C,) pixels per channel
    v = np.arange(256, dtype=np.float64)[:, None] / 255
    mean = (counts * v).sum(0) / n
    std = np.sqrt((counts * (v - mean) ** 2).sum(0) / n)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
