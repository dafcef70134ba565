"""The run directory: the unit of record (docs/schema.md).

  config.json     resolved arguments, argv, git commit, versions, host, Slurm ids, stage, parent
  members.jsonl   one row per member (member, plr, flr, seed, data_seed, parent_member, lr)
  metrics.jsonl   one row per evaluation per member; append-only
  checkpoints/    last.pt (resumable, with last.pt.prev), final.pt (the trained weights),
                  <unit>_NNNN.pt (weights kept at chosen units: epoch_0498.pt, step_39600.pt)
  results.json    written last: its presence means the run is complete
Downstream tools read these files, never stdout. A complete run started again with a longer length
(and otherwise the same flags, at a constant LR) is continued: its results.json becomes
results_<old length>.json and the stage loop goes on from checkpoints/final.pt (engine/stage.py).
"""
import datetime
import fcntl
import json
import os
import platform
import socket
import subprocess
import sys

import torch

from core.errors import UserError
from core.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from engine import checkpoint
from engine.args import EXECUTION_FLAGS


def git_commit():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    def __init__(self, path):
        self.path = path
        self.config_path = os.path.join(path, "config.json")
        self.members_path = os.path.join(path, "members.jsonl")
        self.metrics_path = os.path.join(path, "metrics.jsonl")
        self.results_path = os.path.join(path, "results.json")
        self.ckpt_dir = os.path.join(path, "checkpoints")
        self.last_ckpt = os.path.join(self.ckpt_dir, "last.pt")
        self.final_ckpt = os.path.join(self.ckpt_dir, "final.pt")

    def kept_ckpt(self, unit, n):
        """The weights kept at `unit` ("epoch" or "step") n: train.py --save_epochs, the synthetic
        setup's SWA snapshots, swa.py --keep_window."""
        return os.path.join(self.ckpt_dir, f"{unit}_{n:04d}.pt")

    # ---- reading (downstream scripts) ----
    def exists(self):
        return os.path.exists(self.config_path)

    def is_complete(self):
        return os.path.exists(self.results_path)

    def config(self):
        with open(self.config_path) as f:
            return json.load(f)

    def members(self):
        return read_jsonl(self.members_path)

    def metrics(self):
        return read_jsonl(self.metrics_path) if os.path.exists(self.metrics_path) else []

    def results(self):
        with open(self.results_path) as f:
            return json.load(f)

    def final(self, kinds=None):
        """The complete run's final checkpoint (a UserError if the run is not complete)."""
        if not self.is_complete():
            raise UserError(f"{self.path} is not a complete run (no results.json); finish it first")
        ckpt = checkpoint.load(self.final_ckpt, kinds=kinds)
        if ckpt is None:
            raise UserError(f"{self.path} has no checkpoints/final.pt")
        return ckpt

    # ---- writing (the script that owns the run) ----
    def start(self, args, stage, members, parent=None, meta=None, length=None):
        """Create the run, or check that an existing one is the same configuration.

        meta: what downstream readers (report.py) need without opening a checkpoint: the model's
        constructor arguments, the recipe, the chance level ...; kept in config.json as it is.
        length: the setting that is the stage's length ("epochs", "iters"): a run that differs from
        this one in it alone, at a constant LR, is continued to the larger length (`_extend`).

        Returns "complete", "resume" or "new". Nothing is written when the directory holds a
        different run, so a typo in --out can never clobber other results.
        """
        settings = {k: v for k, v in sorted(vars(args).items()) if k not in EXECUTION_FLAGS}
        if self.exists():
            try:
                old = self.config()
            except (OSError, ValueError) as e:
                raise UserError(f"{self.config_path} is unreadable ({e}); choose another --out")
            # a flag added after the run started, at its default (None), leaves the run the same run
            old_settings = dict({k: None for k in settings}, **old.get("settings", {}))
            diff = sorted(k for k in set(settings) | set(old_settings) if settings.get(k) != old_settings.get(k))
            if old.get("stage") != stage or diff:
                if old.get("stage") == stage and diff == [length]:
                    self._lock()
                    self._extend(old, settings, length)
                    return "resume"
                what = ", ".join(f"--{k} {_show(old_settings.get(k))} there, {_show(settings.get(k))} here"
                                 for k in diff[:3]) + (" ..." if len(diff) > 3 else "")
                raise UserError(f"{self.path} holds a different run ({old.get('stage')}; {what or 'another stage'}); "
                                f"choose another --out")
            if self.is_complete():
                return "complete"
            self._lock()
            return "resume"
        leftovers = {".lock"}  # what a start that died before writing config.json leaves
        if os.path.isdir(self.ckpt_dir) and not os.listdir(self.ckpt_dir):
            leftovers.add("checkpoints")
        if os.path.exists(self.path) and set(os.listdir(self.path)) - leftovers:
            raise UserError(f"{self.path} exists, is not empty and is not a run directory; choose another --out")
        try:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            probe = os.path.join(self.path, ".write_test")
            open(probe, "w").close()
            os.remove(probe)
        except OSError as e:
            raise UserError(f"cannot write to {self.path}: {e.strerror}; choose another --out")
        config = {
            "stage": stage, "settings": settings, "args": vars(args), "argv": sys.argv,
            "parent": parent, "meta": meta or {}, "git_commit": git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "host": socket.gethostname(),
            "slurm": {k: v for k, v in os.environ.items() if k.startswith("SLURM_") and
                      k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME")},
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        self._lock()
        write_jsonl_atomic(self.members_path, members)
        write_json_atomic(self.config_path, config)  # last: its presence marks a run directory
        return "new"

    def _extend(self, old, settings, length):
        """Continue the run to a larger `length`: at a constant LR its first steps are those of the
        longer run (batches are a function of the seed and the step), so going on from its final
        checkpoint gives the longer run bit for bit. results.json, if any, is kept as
        results_<old length>.json; config.json records the new length and the extension."""
        before, after = old["settings"].get(length), settings[length]
        schedule = old.get("meta", {}).get("recipe", {}).get("schedule", "constant")
        if schedule != "constant":
            raise UserError(f"{self.path} holds a {schedule}-schedule run of --{length} {before}: its LR depends on "
                            f"the length, so it cannot be continued to {after}; choose another --out")
        if after < before:
            raise UserError(f"{self.path} holds a run of --{length} {before}; a run is never cut short to {after} "
                            f"(choose another --out)")
        if self.is_complete():
            os.replace(self.results_path, os.path.join(self.path, f"results_{before}.json"))
        now = datetime.datetime.now().isoformat(timespec="seconds")
        config = dict(old, settings=settings, args=dict(old["args"], **{length: after}),
                      extended=old.get("extended", []) + [{length: [before, after], "argv": sys.argv, "at": now}])
        write_json_atomic(self.config_path, config)
        print(f"{self.path}: continuing the run from --{length} {before} to {after}")

    def _lock(self):
        """Hold an exclusive lock on the directory for the life of this process: two processes
        never train into one run (a double launch, a requeued task whose old copy still runs)."""
        self._lock_file = open(os.path.join(self.path, ".lock"), "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{self.path} is being written by another process right now; wait for it "
                            f"or stop it (two runs never share a directory)")
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"{socket.gethostname()} {os.getpid()}\n")
        self._lock_file.flush()

    def append_metrics(self, rows):
        with open(self.metrics_path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
            f.flush()

    def truncate_metrics(self, value, key="step"):
        """Drop rows after step (or epoch) `value`: written after the checkpoint we resume from, redone."""
        if os.path.exists(self.metrics_path):
            write_jsonl_atomic(self.metrics_path, [r for r in self.metrics() if r[key] <= value])

    def write_results(self, results):
        write_json_atomic(self.results_path, results)


def _show(value):
    """A setting as a flag value: lists space-separated."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def load_parent(path, kinds=("pretrain",)):
    """The parent's RunDir, config and final checkpoint; a UserError if it is not a finished pre-training run."""
    parent = RunDir(path)
    if not parent.exists():
        raise UserError(f"--from {path} is not a run directory (no config.json)")
    config = parent.config()
    if config.get("stage") not in kinds:
        raise UserError(f"--from {path} is a {config.get('stage')} run; expected a {' or '.join(kinds)} run")
    return parent, config, parent.final(kinds=list(kinds))
