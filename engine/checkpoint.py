"""Self-describing checkpoints, written atomically.

A checkpoint is a dict with at least `format`, `kind` ("pretrain", "finetune", "swa"), `model` and
`model_args` (the record's name or the researcher's class spec, and its constructor arguments),
`dataset`, `recipe`, `members`, `unit` ("step" or "epoch") and `done` (how many of them the stage
has trained), and `state`: all members' weights as ONE stacked state_dict of the model class (the
keys of `model.state_dict()`, each tensor with a leading member dimension), for every model and
backend alike, so downstream scripts need only its path. Writes go to a temporary
file that replaces the target with os.replace; the previous checkpoint is kept as `<name>.prev`
and used when the newest one cannot be read (a crash in the middle of a write, a truncated copy).
"""
import os

import torch

from core.errors import UserError

FORMAT = "lrl-checkpoint-v2"
OLD_FORMATS = ("lrl-checkpoint-v1",)  # per-member lists / w1-w2-w3 tensors: read by no script now


def stack(states):
    """Member state_dicts (the same keys) -> one state_dict whose tensors have a leading member dim."""
    return {k: torch.stack([s[k].detach().cpu() for s in states]) for k in states[0]}


def member(state, i):
    """Member i's state_dict out of a stacked one."""
    return {k: v[i] for k, v in state.items()}


def save(path, obj):
    obj = dict(obj, format=FORMAT)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(path):
        os.replace(path, f"{path}.prev")
    os.replace(tmp, path)


def _read(path):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and obj.get("format") in OLD_FORMATS:
        raise UserError(f"{path} was written by an earlier version of this repository ({obj['format']}); "
                        f"rerun that run with this version (delete its directory first)")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError("not a checkpoint of this project")
    return obj


def load(path, kinds=None, fallback=True):
    """Load a checkpoint; with `fallback`, a damaged file gives way to `<path>.prev`.

    kinds: allowed values of `kind`; anything else is a UserError. Returns None when neither the
    file nor its predecessor exists.
    """
    candidates = [path, f"{path}.prev"] if fallback else [path]
    problems = []
    for p in candidates:
        if not os.path.exists(p):
            continue
        try:
            obj = _read(p)
        except UserError:  # readable, but of an old format: falling back would hide that
            raise
        except Exception as e:  # truncated, corrupt or foreign file: report, try the previous one
            problems.append(f"{p}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
            continue
        if problems:
            print(f"warning: could not read {problems[0]}; using {p}")
        if kinds is not None and obj.get("kind") not in kinds:
            raise UserError(f"{p} is a {obj.get('kind')!r} checkpoint, expected {' or '.join(kinds)}")
        return obj
    if problems:
        raise UserError(f"cannot read checkpoint {problems[0]}")
    return None


def exists(path):
    """A checkpoint at `path` (or its predecessor) exists."""
    return os.path.exists(path) or os.path.exists(f"{path}.prev")


def remove(path):
    """Delete a checkpoint and its predecessor, if present."""
    for p in (path, f"{path}.prev"):
        if os.path.exists(p):
            os.remove(p)
