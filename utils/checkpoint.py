"""Self-describing checkpoints, written atomically.

A checkpoint is a dict with at least `format`, `kind` ("pretrain", "finetune", "swa"), `model`,
`model_args` and `state`, so downstream scripts need only its path. Writes go to a temporary
file that replaces the target with os.replace; the previous checkpoint is kept as `<name>.prev`
and used when the newest one cannot be read (a crash in the middle of a write, a truncated copy).
"""
import os

import torch

from utils.args import UserError

FORMAT = "lrl-checkpoint-v1"


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


def remove(path):
    """Delete a checkpoint and its predecessor, if present."""
    for p in (path, f"{path}.prev"):
        if os.path.exists(p):
            os.remove(p)
