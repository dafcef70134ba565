"""The one stage loop: pre-training, fine-tuning and SWA of both backends run `run_stage`.

    stage = Stage("pretrain", length=40000, eval_every=1000, checkpoint_every=5000, keep=frozenset({40000}))
    results = run_stage(rd, stage, trainer, meta)      # results.json's content

The loop owns what every stage shares:
- start, or resume from checkpoints/last.pt; a complete run given a longer length (train.py or
  finetune.py with a larger --epochs / --iters, constant LR) continues from checkpoints/final.pt, and
  ends as a run started with that length would (engine/rundir.py: RunDir.start);
- evaluate at unit 0 and every `eval_every` units and at the end, append the rows to metrics.jsonl
  and print one fixed-format line (`digest`);
- keep the weights of chosen units as checkpoints/<unit>_NNNN.pt (train.py --save_epochs, the
  synthetic setup's SWA snapshots, swa.py --keep_window);
- SWA, one way for every backend: the equal-weight mean (in float64) of the weights at `average`
  units of this stage and of the checkpoints in `sources`, handed to the trainer (which recomputes BN
  statistics), evaluated (rows with "swa": true);
- checkpoints written atomically every `checkpoint_every` units; SIGTERM (Slurm preemption, time
  limit) -> a checkpoint at the next point the trainer can stop at -> exit status 143.

A trainer supplies what differs (engine/population.py, engine/module.py):
  unit                      "step" (iterations) or "epoch": the metrics rows' key and the length's unit
  advance(done, target, stop) -> units done: train from `done` to `target`; less when stop.set (the
                            trainer then remembers where it stopped inside a unit, for state())
  evaluate(done) -> rows    metrics rows of every member (train and test split)
  state() / load(ckpt)      what a checkpoint holds besides the run's meta: "state" (the members'
                            weights, one stacked state_dict) and the trainer's own (optimizers, position)
  weights() / set_weights(state)  the stacked state_dict now (CPU) / the averaged one to evaluate
  speed(units, seconds) -> (text, {results.json key: value})
"""
import dataclasses
import signal
import sys
import time

import torch
from tqdm import tqdm

from engine import checkpoint


@dataclasses.dataclass(frozen=True)
class Stage:
    """What one stage trains, in its trainer's unit (iterations or epochs)."""
    kind: str                     # "pretrain", "finetune" or "swa": the checkpoints' kind
    length: int                   # units to train; 0: none (SWA of weights kept by the parent run)
    eval_every: int = 1
    checkpoint_every: int = 1
    keep: frozenset = frozenset()  # units whose weights are written to checkpoints/<unit>_NNNN.pt
    average: frozenset = frozenset()  # SWA: units of this stage (0: the start) whose weights are averaged
    sources: tuple = ()           # SWA: checkpoint files whose weights are averaged too (after those)
    extendable: bool = True       # a complete run may be continued to a longer length (a constant LR)


class StopFlag:
    """Set by SIGTERM (preemption, Slurm time limit): the loop checkpoints and exits 143. A context
    manager: the handler that was there before comes back when the stage ends (scan.py has its own)."""

    def __init__(self):
        self.set = False

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._previous)

    def _handler(self, signum, frame):
        self.set = True


class Average:
    """The equal-weight mean of stacked state_dicts (SWA): the sum accumulated in float64, divided by
    the count, returned in the weights' own dtypes (torch.optim.swa_utils keeps a float32 running
    mean of one model's parameters instead; this is one sum for thousands of members at once, and a
    fixed head, the same in every state, comes out exactly as it is). Integer tensors (BN's
    num_batches_tracked) are taken from the latest state."""

    def __init__(self):
        self.sum, self.n, self.dtypes, self.ints = None, 0, None, {}

    def update(self, state):
        floats = {k: v.detach() for k, v in state.items() if v.is_floating_point()}
        if self.sum is None:
            self.dtypes = {k: v.dtype for k, v in floats.items()}
            self.sum = {k: v.double().cpu() for k, v in floats.items()}
        else:
            for k in self.sum:
                self.sum[k] += floats[k].double().cpu()
        self.ints = {k: v.clone() for k, v in state.items() if not v.is_floating_point()}
        self.n += 1

    def result(self):
        return {**{k: (v / self.n).to(self.dtypes[k]) for k, v in self.sum.items()}, **self.ints}

    def state_dict(self):
        return None if self.sum is None else {"sum": self.sum, "n": self.n, "ints": self.ints, "dtypes": {
            k: str(d).removeprefix("torch.") for k, d in self.dtypes.items()}}

    def load_state_dict(self, s):
        if s is not None:
            self.sum, self.n, self.ints = s["sum"], s["n"], s["ints"]
            self.dtypes = {k: getattr(torch, d) for k, d in s["dtypes"].items()}


def digest(rows):
    """One fixed-format line: median loss and accuracy per split, and the accuracy range."""
    out = []
    for split in ("train", "test"):
        r = [x for x in rows if x["split"] == split]
        loss = torch.tensor([x["loss"] for x in r], dtype=torch.float64).median().item()
        acc = torch.tensor([x["acc"] for x in r], dtype=torch.float64)
        out.append(f"{split} loss {loss:.4f} acc {acc.median():.1%} [{acc.min():.1%}, {acc.max():.1%}]")
    return " | ".join(out)


def final_metrics(rows, n_members):
    """results.json's per-member entry from one evaluation's rows: train/test loss and acc, norm."""
    final = [{} for _ in range(n_members)]
    for r in rows:
        final[r["member"]].update({f"{r['split']}_loss": r["loss"], f"{r['split']}_acc": r["acc"],
                                          "weight_norm": r["weight_norm"]})
    return final


def _next(done, every):
    return (done // every + 1) * every


def run_stage(rd, stage, trainer, meta):
    """Train (or continue training) `trainer`'s members for `stage`; returns results.json's content.
    meta: what every checkpoint records besides the weights (the model, data, recipe, members ...)."""
    unit, n_members = trainer.unit, len(meta["members"])
    done, avg = 0, Average()
    ckpt = checkpoint.load(rd.last_ckpt, kinds=[stage.kind])
    extending = ckpt is None and checkpoint.exists(rd.final_ckpt)  # a complete run given a longer length
    if extending:
        ckpt = checkpoint.load(rd.final_ckpt, kinds=[stage.kind])
    if ckpt is not None:
        trainer.load(ckpt)
        done = ckpt["done"]
        avg.load_state_dict(ckpt.get("average"))
        rd.truncate_metrics(done, key=unit)
        print(f"{'continuing' if extending else 'resuming'} {rd.path} from {unit} {done}{trainer.where()}"
              + (f" to {stage.length}" if extending else ""))
    else:
        rd.truncate_metrics(-1)  # rows of an attempt that died before its first checkpoint
        if stage.length:  # (an SWA of kept weights trains nothing: no starting point to evaluate)
            rows = trainer.evaluate(0)
            rd.append_metrics(rows)
            print(f"{unit} {0:>{len(str(stage.length))}}/{stage.length} | {digest(rows)}")
        if 0 in stage.average:
            avg.update(trainer.weights())

    def save(path, **extra):
        checkpoint.save(path, dict(meta, kind=stage.kind, unit=unit, done=done, kept=sorted(
            u for u in stage.keep if u <= done), average=avg.state_dict(), **trainer.state(), **extra))

    marks = sorted(stage.keep | stage.average)
    with StopFlag() as stop:
        first, seconds = done, 0.0
        bar = tqdm(total=stage.length, initial=done, disable=None, unit=unit, dynamic_ncols=True)
        while done < stage.length:
            target = min(stage.length, _next(done, stage.eval_every), _next(done, stage.checkpoint_every),
                         *(u for u in marks if u > done))
            t0 = time.perf_counter()
            reached = trainer.advance(done, target, stop)
            seconds += time.perf_counter() - t0
            bar.update(reached - done)
            if reached > done:
                done = reached
                if done % stage.eval_every == 0 or done == stage.length:  # before a SIGTERM exit too
                    rows = trainer.evaluate(done)
                    rd.append_metrics(rows)
                    text, _ = trainer.speed(done - first, seconds)
                    tqdm.write(f"{unit} {done:>{len(str(stage.length))}}/{stage.length} | {digest(rows)} | {text}")
                if done in stage.keep:
                    checkpoint.save(rd.kept_ckpt(unit, done), dict(meta, kind=stage.kind, unit=unit, done=done,
                                                                    state=trainer.weights()))
                if done in stage.average:
                    avg.update(trainer.weights())
            if stop.set and done < stage.length:
                save(rd.last_ckpt)
                print(f"SIGTERM: checkpoint written at {unit} {done}{trainer.where()} to {rd.last_ckpt}; rerun to "
                      f"resume", flush=True)
                sys.exit(143)
            if done % stage.checkpoint_every == 0 and done < stage.length:
                save(rd.last_ckpt)
        bar.close()
    averaged = bool(stage.average or stage.sources)
    if averaged and not (ckpt or {}).get("averaged"):
        for path in stage.sources:
            avg.update(checkpoint.load(path, kinds=["pretrain"])["state"])
        trainer.set_weights(avg.result())
        rows = [dict(r, swa=True) for r in trainer.evaluate(done)]
        rd.append_metrics(rows)
        print(f"SWA of {avg.n} | {digest(rows)}")
    final_rows = [r for r in rd.metrics() if r[unit] == done and bool(r.get("swa")) == averaged]
    save(rd.final_ckpt, averaged=averaged)
    checkpoint.remove(rd.last_ckpt)  # superseded by final.pt
    _, speed = trainer.speed(done - first, seconds)
    return {unit: done, "members": final_metrics(final_rows, n_members), "train_seconds": seconds, **speed}
