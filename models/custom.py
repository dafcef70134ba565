"""A researcher's own model class, without editing the repository.

  load_class("my_models.py:WideNet")       a file, relative to the current directory or absolute
  load_class("mypkg.nets:WideNet")         a module on the Python path
  parse_model_args(["width=8", "act='relu'", "kernel=(3, 3)"])  -> {"width": 8, "act": "relu", ...}
  construct(cls, num_classes=10, in_channels=3, model_args={...})  -> cls(num_classes=..., in_channels=..., ...)
  check_scale_invariant(model, x)          the claim `scale_invariant = True`, measured

Runs record the spec string and the arguments, and downstream scripts rebuild the model from them,
so every failure here (a moved file, an import error, a renamed class) is one line naming the spec.
"""
import ast
import copy
import hashlib
import importlib
import importlib.util
import keyword
import os
import re
import sys

import torch
from torch import nn

from core.errors import UserError

_FILE_MODULES = {}  # absolute path -> module: each file is executed once per process

# The scale-invariance check multiplies all trainable parameters by SI_SCALE and compares outputs
# (float64, train mode). SI_SCALE is a power of two, so the scaled weights and, in float64, the
# pre-normalisation activations are exactly scaled; what remains is the normalisation layers' eps
# (BatchNorm 1e-5, SIMLP's LayerNorm 1e-7): var + eps -> c^2 var + eps makes a real SI model only
# approximately invariant, by about eps / (2 var) whatever c is, while a parameter that breaks
# invariance (a bias, an affine scale) moves the output about linearly in c: a large c widens the gap.
# Measured ||f(c w) - f(w)|| / ||f(w)|| at c = 64, batch of 4 N(0, 1) inputs, 5 seeds each (CPU):
#   SI, default init:  ConvNetSI width 4 <= 3.6e-5, ResNet18 SI width 4 <= 4.7e-5, SIMLP <= 4.8e-7
#                      (width 32: ConvNetSI 3.4e-5, ResNet18 SI 4.9e-5)
#   SI, weights x 0.1 (var / 100, an init 10x smaller than PyTorch's): ConvNetSI 3.6e-3, ResNet18 SI 4.8e-3
#   broken:            ConvNetSI with a trainable head bias >= 0.77, trainable bias of the last layer
#                      >= 30, one affine BN >= 53, a trainable head 63, practical ResNet18 width 4 >= 3.6e3
# SI_TOL = 1e-2: 200x above the SI models at their init, 2x above them at a 10x smaller weight scale,
# 77x below the least broken model.
SI_SCALE = 64.0
SI_TOL = 1e-2


def load_class(spec):
    """The nn.Module subclass named by `spec`: "path/to/file.py:ClassName" or "package.module:ClassName"."""
    if not isinstance(spec, str) or ":" not in spec:
        raise UserError(f"model spec {spec!r}: expected path/to/file.py:ClassName or package.module:ClassName")
    where, name = (part.strip() for part in spec.rsplit(":", 1))  # rsplit: a Windows path has a drive colon
    if not where or not name:
        raise UserError(f"model spec {spec!r}: empty {'file or module' if not where else 'class name'}; "
                        "expected path/to/file.py:ClassName or package.module:ClassName")
    if where.endswith(".py") or "/" in where or os.sep in where:
        module = _import_file(spec, where)
    else:
        module = _import_module(spec, where)
    obj = module
    for part in name.split("."):  # "Outer.Inner" reaches a nested class
        if not hasattr(obj, part):
            classes = sorted(k for k, v in vars(module).items()
                             if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module.__name__)
            raise UserError(f"model spec {spec!r}: {where} has no {name!r} "
                            f"(nn.Module classes defined there: {', '.join(classes) or 'none'})")
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise UserError(f"model spec {spec!r}: {name} is a {type(obj).__name__}, not a class")
    if not issubclass(obj, nn.Module):
        raise UserError(f"model spec {spec!r}: class {name} is not a torch.nn.Module subclass")
    return obj


def _first_line(exc):
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _import_file(spec, where):
    path = os.path.abspath(os.path.expanduser(where))
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    if not os.path.isfile(path):
        what = "is a directory, not a .py file" if os.path.isdir(path) else "does not exist"
        raise UserError(f"model spec {spec!r}: {path} {what} (has the file moved or was it deleted? runs "
                        "record the spec and rebuild the model from it)")
    # A module name unique to the absolute path: two files called model.py do not clash.
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    mod_name = f"_custom_model_{hashlib.sha1(path.encode()).hexdigest()[:12]}_{stem}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module  # before executing it, as import does (dataclasses, pickling need it)
    # Its own directory first on the path while it runs, as for `python file.py`: sibling imports work.
    sys.path.insert(0, os.path.dirname(path))
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        del sys.modules[mod_name]
        raise UserError(f"model spec {spec!r}: importing {path} failed: {_first_line(e)}") from e
    finally:
        sys.path.remove(os.path.dirname(path))
    _FILE_MODULES[path] = module
    return module


def _import_module(spec, where):
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and (where == e.name or where.startswith(e.name + ".")):
            raise UserError(f"model spec {spec!r}: no module {where!r} on the Python path (a file is "
                            "path/to/file.py:ClassName)") from e
        raise UserError(f"model spec {spec!r}: importing {where} failed: {_first_line(e)}") from e
    except (Exception, SystemExit) as e:
        raise UserError(f"model spec {spec!r}: importing {where} failed: {_first_line(e)}") from e


def parse_model_args(items):
    """["key=value", ...] -> {key: value}; values are Python literals (ast.literal_eval)."""
    args = {}
    for item in items or ():
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"model argument {item!r}: expected key=value, e.g. width=8")
        if not key.isidentifier() or keyword.iskeyword(key):
            raise UserError(f"model argument {item!r}: {key!r} is not a Python identifier")
        if key in args:
            raise UserError(f"model argument {item!r}: {key} is given twice")
        try:
            args[key] = ast.literal_eval(text.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise UserError(f"model argument {item!r}: {text!r} is not a Python literal (a number, True, None, "
                            f"a tuple ...); strings need quotes, e.g. {key}=\"'relu'\"") from None
    return args


def construct(cls, num_classes, in_channels, model_args):
    """cls(num_classes=num_classes, in_channels=in_channels, **model_args), failures as one UserError."""
    for k in ("num_classes", "in_channels"):
        if k in model_args:
            raise UserError(f"model argument {k} is set from the dataset; drop it from the model arguments")
    call = ", ".join(f"{k}={v!r}" for k, v in
                     dict(num_classes=num_classes, in_channels=in_channels, **model_args).items())
    try:
        model = cls(num_classes=num_classes, in_channels=in_channels, **model_args)
    except Exception as e:
        raise UserError(f"constructing {cls.__name__}({call}) failed: {_first_line(e)} (a model class is "
                        "called with num_classes, in_channels and the model arguments as keywords)") from e
    if not isinstance(model, nn.Module):
        raise UserError(f"constructing {cls.__name__}({call}) gave a {type(model).__name__}, not an nn.Module")
    return model


@torch.no_grad()
def check_scale_invariant(model, x):
    """Measure the claim that `model` is scale-invariant: the relative change of its output on x
    when all trainable parameters are multiplied by SI_SCALE. Returns it when below SI_TOL, else raises
    UserError naming the parameter that breaks invariance most.

    x: a batch of inputs, or its shape (then N(0, 1) from a generator seeded 0). The check runs on a
    float64 deep copy in train mode (BN normalises with batch statistics, as in training); the caller's
    model, its running statistics and the global RNG are untouched. Dropout draws the same masks in
    every forward (the RNG is reseeded before each). Frozen parameters (requires_grad False, e.g. a
    fixed head) are not scaled: they are not on the sphere. The culprit is found by leave-one-out:
    the parameter whose exclusion from the scaling brings the change down the most.
    """
    name = type(model).__name__
    m = copy.deepcopy(model).double().train()
    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    if not named:
        raise UserError(f"{name} has no trainable parameters: there is nothing to put on the sphere")
    device = named[0][1].device
    if not torch.is_tensor(x):
        x = torch.randn(tuple(x), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x.to(device, torch.float64 if x.is_floating_point() else x.dtype)
    params = [p for _, p in named]
    # An all-zero tensor (a zero-initialised bias) would look invariant however it is scaled: draw
    # it instead. Harmless for SI models, which are invariant at every point.
    g = torch.Generator().manual_seed(0)
    for p in params:
        if not p.any():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    original = [p.clone() for p in params]

    def output(scaled):
        """The output with parameter i multiplied by SI_SCALE for each i in `scaled`."""
        for i, (p, p0) in enumerate(zip(params, original)):
            p.copy_(p0 * SI_SCALE if i in scaled else p0)
        # The same random draws (dropout masks) in every forward; only the forked generators are seeded.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.default_generator.manual_seed(0)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(0)
            out = m(x)
        if not torch.is_tensor(out):
            raise UserError(f"{name} returned a {type(out).__name__}; the model must return a tensor of logits")
        return out

    base = output(())
    if not torch.isfinite(base).all():
        raise UserError(f"{name} gives non-finite outputs on the check's input {tuple(x.shape)}")
    scale = torch.linalg.vector_norm(base).clamp_min(1e-300)

    def change(scaled):
        return (torch.linalg.vector_norm(output(scaled) - base) / scale).item()

    everything = set(range(len(params)))
    rel = change(everything)
    if rel <= SI_TOL:  # NaN fails too
        return rel
    # Leave one out: the parameter whose exclusion from the scaling reduces the change the most.
    loo = [change(everything - {i}) for i in range(len(params))]
    i = min(range(len(params)), key=lambda j: loo[j])
    n, p = named[i]
    raise UserError(f"{name} is not scale-invariant: multiplying its trainable parameters by {SI_SCALE:g} changes "
                    f"its output by {rel:.2g} (relative, tolerance {SI_TOL:g}); the parameter that breaks it most "
                    f"is {n} {tuple(p.shape)} (left unscaled: {loo[i]:.2g}). Freeze it (requires_grad_(False)), "
                    "remove it, or make the model not claim scale invariance")
