"""Train and evaluate a population of synthetic-setup models in lockstep (one loop for all stages).

train.py (pre-training) and finetune.py (fine-tuning) differ only in where the members start and
which LRs they use; both call `run_stage`. A population is M = P x G members: P groups, one per
data stream (a (data seed, model seed) pair), G members per group that see the same mini-batches.
Resuming is exact: the batch order is a pure function of (stream, step) (data/loader.py), so a
checkpoint needs only the weights, the step and the SWA snapshots taken so far.
"""
import signal
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.loader import batch_indices
from data.tick import tick_data
from models.mlp import BLOCK_STEPS, MLPPopulation
from utils import checkpoint

STAGE_SALT = {"pretrain": 0, "finetune": 1}


def group_data(data_seeds, device):
    """Per-group train/test tensors for the groups' data seeds: x (P, N, 32), y (P, N) float."""
    cache = {d: tick_data(d) for d in sorted(set(data_seeds))}
    return {k: torch.stack([cache[d][k] for d in data_seeds]).float().to(device)
            for k in ("x_train", "y_train", "x_test", "y_test")}


@torch.no_grad()
def evaluate(state, groups, x, y):
    """Mean BCE loss and accuracy of every member on its group's data.

    state: member-major weights (see MLPPopulation.state); x: (P, N, D); y: (P, N) in {0, 1}.
    Goes through MLPPopulation.forward_chunks (cache-sized chunks of members and samples).
    Returns loss (M,), acc (M,) as float64 CPU tensors.
    """
    pop = MLPPopulation(state["w1"], state["w2"], state["w3"], groups)
    grp = torch.arange(pop.M, device=x.device) // pop.G
    loss = torch.zeros(pop.M, dtype=torch.float64, device=x.device)
    correct = torch.zeros(pop.M, dtype=torch.float64, device=x.device)
    for s, e, n0, n1, logits in pop.forward_chunks(x):
        ys = y[:, n0:n1].index_select(0, grp[s:e])  # (e - s, n1 - n0) each member's labels
        loss[s:e] += F.binary_cross_entropy_with_logits(logits, ys, reduction="none").sum(1, dtype=torch.float64)
        correct[s:e] += ((logits > 0) == (ys > 0.5)).sum(1)
    return (loss / x.shape[1]).cpu(), (correct / x.shape[1]).cpu()


def eval_rows(pop, data, step, elrs):
    """metrics.jsonl rows (train and test split for every member) and a one-line digest."""
    state, norms = pop.state(), pop.weight_norm().tolist()
    rows, digest = [], []
    for split in ("train", "test"):
        loss, acc = evaluate(state, pop.P, data[f"x_{split}"], data[f"y_{split}"])
        rows += [{"member": m, "step": step, "split": split, "loss": lo, "acc": ac, "weight_norm": norms[m],
                  "lr": elrs[m]} for m, (lo, ac) in enumerate(zip(loss.tolist(), acc.tolist()))]
        digest.append(f"{split} loss {loss.median():.4f} acc {acc.median():.1%} "
                      f"[{acc.min():.1%}, {acc.max():.1%}]")
    return rows, " | ".join(digest)


def final_metrics(rows, n_members):
    """results.json's per-member entry from one evaluation's rows: train/test loss and acc, norm."""
    final = [{} for _ in range(n_members)]
    for r in rows:
        final[r["member"]].update({f"{r['split']}_loss": r["loss"], f"{r['split']}_acc": r["acc"],
                                   "weight_norm": r["weight_norm"]})
    return final


def block_ends(start, stop, marks, block=BLOCK_STEPS):
    """Last steps of the blocks (MLPPopulation.sgd_steps calls) that take a population from step
    `start` to `stop`: at most `block` steps each, and a block ends at every step in `marks` (the
    snapshot steps) on the way, so that the weights of that step can be kept."""
    ends, done = [], start
    while done < stop:
        done = min(stop, done + block, *(m for m in marks if m > done))
        ends.append(done)
    return ends


class StopFlag:
    """Set by SIGTERM (preemption, Slurm time limit): the loop checkpoints and exits."""

    def __init__(self):
        self.set = False
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.set = True


def run_stage(rd, *, kind, init, groups, streams, elrs, radius, iters, batch_size, eval_every,
              checkpoint_every, snapshot_steps, meta, device):
    """Train `init` (member-major weights) for `iters` projected-SGD steps; returns results.

    elrs: per-member effective LR (the actual LR is elr * radius^2); streams: per-group seed tuples
    that key the batch order; snapshot_steps: steps whose weights are kept for SWA. Writes
    metrics rows every `eval_every` steps and a resumable checkpoint every `checkpoint_every`.
    """
    data = group_data([s[0] for s in streams], device)
    pop = MLPPopulation(*(init[k].to(device) for k in ("w1", "w2", "w3")), groups=groups)
    lr = torch.tensor(elrs, dtype=torch.float32, device=device) * radius ** 2
    step, snaps = 0, {}
    ckpt = checkpoint.load(rd.last_ckpt, kinds=[kind])
    if ckpt is not None:
        step, snaps = ckpt["step"], ckpt["snapshots"]
        pop = MLPPopulation(*(ckpt["state"][k].to(device) for k in ("w1", "w2", "w3")), groups=groups)
        rd.truncate_metrics(step)
        print(f"resuming {rd.path} from step {step}")
    else:
        rd.truncate_metrics(-1)  # rows of an attempt that died before its first checkpoint
        rows, digest = eval_rows(pop, data, 0, elrs)
        rd.append_metrics(rows)
        print(f"step {0:>7}/{iters} | {digest}")

    def save_last():
        checkpoint.save(rd.last_ckpt, dict(meta, kind=kind, step=step, snapshots=snaps,
                                           state={k: v.cpu() for k, v in pop.state().items()}))

    stop, salt = StopFlag(), STAGE_SALT[kind]
    gidx = torch.arange(groups, device=device).view(groups, 1, 1)
    xs, ys = data["x_train"], data["y_train"]
    first, train_seconds, rows = step, 0.0, None
    bar = tqdm(total=iters, initial=step, disable=None, unit="it", dynamic_ncols=True)
    while step < iters:
        stop_at = min(iters, (step // eval_every + 1) * eval_every,
                      (step // checkpoint_every + 1) * checkpoint_every)
        idx = batch_indices(streams, salt, step, stop_at - step, xs.shape[1], batch_size).to(device)
        t0 = time.perf_counter()
        done = step
        for end in block_ends(step, stop_at, snapshot_steps):
            b = idx[:, done - step:end - step]  # (P, end - done, B) sample indices of each group's batches
            pop.sgd_steps(xs[gidx, b], ys[gidx, b], lr, radius)
            done = end
            if done in snapshot_steps:
                snaps[done] = {k: pop.state()[k].cpu().clone() for k in ("w1", "w2")}
            if stop.set:
                stop_at = done
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - t0
        bar.update(stop_at - step)
        step = stop_at
        if step % eval_every == 0 or step == iters:  # before a SIGTERM exit too: resuming skips it
            rows, digest = eval_rows(pop, data, step, elrs)
            rd.append_metrics(rows)
            speed = pop.M * (step - first) / max(train_seconds, 1e-9)
            tqdm.write(f"step {step:>7}/{iters} | {digest} | {speed:,.0f} model-it/s")
        if stop.set and step < iters:
            save_last()
            print(f"SIGTERM: checkpoint written at step {step} to {rd.last_ckpt}; rerun to resume", flush=True)
            sys.exit(143)
        if step % checkpoint_every == 0 and step < iters:
            save_last()
    bar.close()
    if rows is None:  # resumed at the very end: evaluate the final point once
        rows, _ = eval_rows(pop, data, step, elrs)
        rd.append_metrics(rows)
    state = {k: v.cpu() for k, v in pop.state().items()}
    checkpoint.save(rd.final_ckpt, dict(meta, kind=kind, step=step, snapshots=snaps, state=state))
    checkpoint.remove(rd.last_ckpt)  # superseded by final.pt
    return {"step": step, "members": final_metrics(rows, pop.M), "train_seconds": train_seconds,
            "model_iters_per_second": pop.M * (step - first) / train_seconds if train_seconds else None}
