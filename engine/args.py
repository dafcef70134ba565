"""The training scripts' shared flags and their validation.

Scripts build their parser on `common_parser()` (parents=[...]) so shared flags are defined once;
help strings give units. Bad values raise core.errors.UserError (one line, exit 2).
"""
import argparse
import math

import torch

from core.errors import UserError


def common_parser():
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common")
    g.add_argument("--out", required=True, help="run directory to write (created; resumed if it holds "
                   "an unfinished run with the same configuration; skipped if complete)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    g.add_argument("--eval_every", type=int, default=None,
                   help="evaluate every this many iterations (synthetic) or epochs (images)")
    g.add_argument("--checkpoint_every", type=int, default=None,
                   help="write a resumable checkpoint every this many iterations / epochs")
    g.add_argument("--smoke", action="store_true", help="tiny run for tests: few iterations")
    return p


def image_parser():
    """Flags of the image setups: where the data are and the speed switches (all scripts)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("images")
    g.add_argument("--data_dir", default=None,
                   help="folder holding cifar-10-batches-py/, cifar-100-python/ or FashionMNIST/raw/ "
                        "(train.py default: datasets; finetune.py, swa.py: the parent run's)")
    g.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    speed_flags(g)
    return p


def speed_flags(g):
    """The speed switches (engine/step.py), on a parser or group: the scripts' and bench/images.py's."""
    g.add_argument("--bf16", nargs="?", const="on", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast for forward passes; auto: on for CUDA where the model record says it was "
                        "measured to keep the accuracy: the practical ResNet-18 (1.5x faster); off for the SI models "
                        "(it cost them accuracy), the ViT (not measured yet) and on CPUs (docs/benchmarks.md)")
    g.add_argument("--channels_last", choices=("auto", "on", "off"), default="auto",
                   help="channels_last memory format; auto: on for CUDA (1.5-2.1x faster) and CPUs (1.06-1.3x; "
                        "docs/benchmarks.md)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model for training (CUDA: 1.03-1.33x "
                   "faster after 10-20 s of compiling per process; docs/benchmarks.md)")
    g.add_argument("--cuda_graph", choices=("auto", "on", "off"), default="auto",
                   help="replay each training step from a CUDA graph (the same results, fewer launches); "
                        "auto: on for CUDA")


def recipe_flags(p):
    """The training recipe: every field defaults to the model record's (the paper's SI or practical
    recipe, docs/protocol.md sections 2 and 6); finetune.py and swa.py inherit the parent run's."""
    g = p.add_argument_group("recipe (default: the model record's; finetune.py, swa.py: the parent run's)")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None, help="optimizer")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (SI: 0; practical: 0.9)")
    g.add_argument("--weight_decay", type=float, default=None, help="weight decay (SI: 0; practical: 5e-4)")
    g.add_argument("--augment", choices=("none", "crop_flip", "randaugment"), default=None,
                   help="training augmentation: none; random crop (padding 4) + horizontal flip; or RandAugment "
                        "(2 operations of magnitude 14, per image) before them")
    g.add_argument("--sphere", choices=("on", "off"), default=None,
                   help="projected training on one sphere of all trainable weights (needs a model that "
                        "is scale-invariant; checked at start-up)")
    g.add_argument("--schedule", choices=("constant", "cosine"), default=None,
                   help="LR schedule over the stage's T optimizer steps: constant (the default of every model "
                        "record), or cosine: lr_t = lr0 x 0.5 x (1 + cos(pi t / T)) for steps t = 0 .. T-1, so "
                        "the first step uses lr0 and the last one lr0 x 0.5 x (1 + cos(pi (T-1) / T)) > 0 "
                        "(nn.Module models; swa.py's continuation always keeps its LR constant)")
    return p


RECIPE = ("optimizer", "momentum", "weight_decay", "augment", "sphere", "schedule")
# Recipe fields a base may lack (the model records in models/, runs recorded before the field existed)
RECIPE_DEFAULTS = {"schedule": "constant"}


def resolve_recipe(args, base):
    """The run's recipe: `base` (the model record's, or the parent run's) with the flags given on top.
    A flag that does not apply (momentum for Adam) or a negative value is a UserError."""
    recipe = dict(RECIPE_DEFAULTS, **base)
    recipe.update({k: getattr(args, k) for k in RECIPE if getattr(args, k, None) is not None})
    for k in ("momentum", "weight_decay"):
        if not (math.isfinite(recipe[k]) and recipe[k] >= 0):
            raise UserError(f"--{k} must be finite and >= 0, got {recipe[k]}")
    if recipe["optimizer"] != "sgd":
        if args.momentum is not None and args.momentum != 0:
            raise UserError(f"--momentum {args.momentum:g} does not apply to --optimizer {recipe['optimizer']}; "
                            f"drop it")
        recipe["momentum"] = 0.0  # an SGD momentum inherited from a parent or a record does not carry over
    return recipe


# Flags that say how a run is executed, not what it computes: they may differ on resume.
EXECUTION_FLAGS = {"out", "device", "threads", "checkpoint_every", "data_dir", "download", "channels_last",
                   "compile", "cuda_graph", "check_only"}


def check_lrs(lrs, name="--lr"):
    """LRs must be a non-empty list of finite positive numbers."""
    if not lrs:
        raise UserError(f"{name} needs at least one learning rate")
    for lr in lrs:
        if not math.isfinite(lr) or lr <= 0:
            raise UserError(f"{name} {lr!r}: learning rates must be finite and > 0")
    if len(set(lrs)) != len(lrs):
        raise UserError(f"{name} lists a learning rate twice: {lrs}")


def check_positive(value, name):
    if value is None or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def resolve_epoch_schedule(args, epochs, save_epochs=()):
    """Image runs: evaluate and checkpoint every epoch unless told otherwise; all must be positive,
    and epochs whose weights are kept (--save_epochs) must lie in 1..epochs."""
    args.eval_every = args.eval_every or 1
    args.checkpoint_every = args.checkpoint_every or 1
    for name in ("eval_every", "checkpoint_every"):
        check_positive(getattr(args, name), f"--{name}")
    bad = [e for e in save_epochs if not 1 <= e <= epochs]
    if bad:
        raise UserError(f"--save_epochs {bad[0]} is outside 1..{epochs}")


def check_seeds(seeds, name):
    if not seeds:
        raise UserError(f"{name} needs at least one seed")
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"{name} must be distinct non-negative integers, got {seeds}")


def setup_torch(args):
    """Resolve --device and --threads; returns the torch.device."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device!r} is not a device; use auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda":  # deterministic convolutions: a resumed run ends as an uninterrupted one
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return device

