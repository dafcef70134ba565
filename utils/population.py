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
import data as datasets
from models.mlp import BLOCK_STEPS, MLPPopulation, from_state_dict, init_member, to_state_dict
from utils import checkpoint
from utils.args import UserError, check_positive
from utils.geometry import angle
from utils.image_step import schedule_factor
from utils.sphere import project_rows_

STAGE_SALT = {"pretrain": 0, "finetune": 1}


# ---------------------------------------------------------------- the backend's functions (utils/engine.py)

UNIT = "iterations"
FOREIGN_FLAGS = ("epochs", "train_size", "test_size", "save_epochs", "data_dir", "download", "bf16",
                 "channels_last", "compile", "cuda_graph", "from_epoch", "sharpness", "keep_window", "stride")
# (stage -> (--eval_every, --checkpoint_every) defaults, and the same under --smoke)
EVERY = {"pretrain": (1000, 5000), "finetune": (2000, 5000)}
SMOKE_EVERY = {"pretrain": (50, 100), "finetune": (50, 100)}


def resolve_schedule(args, dataset, kind):
    """Stage length (--iters; the dataset record's default), evaluation/checkpoint schedule and, when
    pre-training, the SWA snapshots."""
    args.iters = args.iters or (dataset.smoke_lengths if args.smoke else dataset.lengths)[kind]
    ev, ck = (SMOKE_EVERY if args.smoke else EVERY)[kind]
    args.eval_every, args.checkpoint_every = args.eval_every or ev, args.checkpoint_every or ck
    for name in ("iters", "eval_every", "checkpoint_every", "batch_size"):
        check_positive(getattr(args, name, 1), f"--{name}")
    if kind == "pretrain":
        args.keep_snapshots = 5 if args.keep_snapshots is None else args.keep_snapshots
        args.snapshot_every = args.snapshot_every or (10 if args.smoke else 100)
        check_positive(args.snapshot_every, "--snapshot_every")
        if args.keep_snapshots < 0 or (args.keep_snapshots - 1) * args.snapshot_every >= args.iters:
            raise UserError(f"--keep_snapshots {args.keep_snapshots} x --snapshot_every {args.snapshot_every} "
                            f"does not fit in --iters {args.iters}")


def check_recipe(recipe):
    """The fused backend's hand-written step is projected SGD without momentum or weight decay, at a
    constant LR or on the cosine schedule."""
    schedule_factor(recipe.get("schedule", "constant"), 0, 1)  # an unknown schedule: one line
    plain = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "augment": "none", "sphere": "on"}
    off = [k for k, v in plain.items() if recipe[k] != v]
    if off:
        raise UserError(f"--{off[0]} {recipe[off[0]]}: the fused population backend trains plain projected SGD "
                        f"(sgd, momentum 0, weight decay 0, no augmentation, sphere on) only")


def length_text(args):
    return f"{args.iters} iterations"


def speed(args, device):
    return {}


def load_data(dataset, args, device):
    """What the run records of its data, read off the first data seed's draw (the data themselves
    are drawn per data seed where they are used, `group_data`)."""
    d = dataset.draw(args.data_seed[0])
    return {"num_classes": int(d["y_train"].max()) + 1, "in_channels": d["x_train"].shape[1], "record": {},
            "summary": f"data seeds {args.data_seed}, {len(d['y_train'])} train / {len(d['y_test'])} test points each"}


def initial_states(record, model_args, seeds, radius, data, device):
    """Each model seed's initial weights (models.mlp.init_member: jointly on the sphere of `radius`),
    as SIMLP state_dicts, and the radius."""
    inits = {s: init_member(s, in_dim=model_args["in_channels"], width=model_args["width"], radius=radius)
             for s in seeds}
    one = lambda w: checkpoint.member(to_state_dict({k: v[None] for k, v in w.items()}), 0)  # noqa: E731
    return {s: one(w) for s, w in inits.items()}, {s: radius for s in seeds}


def parent_data(ckpt, args, device):
    """Nothing to load up front: the data are drawn per data seed where they are used."""
    return {}


def check_swa(args, ckpt):
    """SWA-N averages the parent's last N snapshots (train.py --keep_snapshots)."""
    if args.n_models > len(ckpt["snapshots"]):
        raise UserError(f"--n_models {args.n_models}: {args.parent} kept only {len(ckpt['snapshots'])} snapshots "
                        f"(train.py --keep_snapshots)")


def swa(rd, *, members, ckpt, data, meta, args, device, speed):
    """The mean of each member's last N snapshots (accumulated in float64, so the fixed head, the same
    in all of them, comes out exactly as it is), evaluated; no training."""
    n = args.n_models
    steps = sorted(ckpt["snapshots"])[-n:]
    snaps = [ckpt["snapshots"][s] for s in steps]
    state = {k: (sum(sn[k].double() for sn in snaps) / n).float() for k in snaps[0]}
    print(f"SWA of {len(members)} models over the snapshots at iterations {steps}")
    streams = streams_of(members)
    pop = population(state, len(streams), device)
    rows, digest = eval_rows(pop, group_data(ckpt["dataset"], [s[0] for s in streams], device), ckpt["step"],
                             [m["lr"] for m in members])
    print(f"SWA-{n} | {digest}")
    rd.truncate_metrics(-1)
    rd.append_metrics(rows)
    checkpoint.save(rd.final_ckpt, dict(meta, kind="swa", step=ckpt["step"], snapshots={}, state=state,
                                        members=members, swa_steps=steps))
    return {"step": ckpt["step"], "swa_steps": steps, "members": final_metrics(rows, len(members))}


def data_seeds(ckpt):
    """The data seed of each group of the run's members (groups share their data and batches)."""
    return [d for d, _ in streams_of(ckpt["members"])]


def test_set(ckpt, args, device):
    """The regular test set of each group: x (P, N, 32), y (P, N) float."""
    d = group_data(ckpt["dataset"], data_seeds(ckpt), device)
    return {"x": d["x_test"], "y": d["y_test"]}


def member_accuracy(ckpt, device):
    """A function (x, y) -> accuracy (M,) float64 of every member of the checkpoint on its group's
    samples x (P, N, 32), y (P, N); the weights are moved to `device` once."""
    w = {k: v.to(device) for k, v in from_state_dict(ckpt["state"]).items()}
    groups = len(data_seeds(ckpt))
    return lambda x, y: evaluate(w, groups, x, y)[1]


def paths(pairs, alphas, args, device):
    """Geometry: train and test errors along every pair's linear path at once (each point
    re-projected onto the sphere), and the angle between the endpoints; per pair
    (angle, train_err, test_err). pairs: (name, (plr, seed, data_seed), (ckpt, i), (ckpt, j))."""
    w = lambda end: from_state_dict(checkpoint.member(end[0]["state"], end[1]))  # noqa: E731
    A = {k: torch.stack([w(x)[k] for _, _, x, _ in pairs]) for k in ("w1", "w2", "w3")}  # (K, ...)
    B = {k: torch.stack([w(y)[k] for _, _, _, y in pairs]) for k in ("w1", "w2")}
    radius = pairs[0][2][0]["members"][pairs[0][2][1]]["radius"]
    # (K, N, 32): each pair on its own data seed's data
    data = group_data(pairs[0][2][0]["dataset"], [k[2] for _, k, _, _ in pairs], device)
    K, errs = len(pairs), {"train": [], "test": []}
    for a in alphas:
        st = {k: ((1 - a) * A[k].double() + a * B[k].double()).float() for k in ("w1", "w2")}
        project_rows_(st["w1"].view(K, -1), st["w2"].view(K, -1), radius)
        st["w3"] = A["w3"]
        st = {k: v.to(device) for k, v in st.items()}
        for split in errs:
            errs[split].append(1 - evaluate(st, K, data[f"x_{split}"], data[f"y_{split}"])[1])
    angles = [angle({k: A[k][i] for k in ("w1", "w2")}, {k: B[k][i] for k in ("w1", "w2")}) for i in range(K)]
    return [(angles[i], [e[i].item() for e in errs["train"]], [e[i].item() for e in errs["test"]])
            for i in range(K)]


def streams_of(members):
    """The population's data streams, one per group of consecutive members sharing (data seed, model
    seed): its groups are these, and all of a group's members see the same mini-batches."""
    streams = []
    for m in members:
        if not streams or streams[-1] != (m["data_seed"], m["seed"]):
            streams.append((m["data_seed"], m["seed"]))
    if len(members) % len(streams) or len(set(streams)) != len(streams):
        raise ValueError("members are not group-major with equal groups")
    return streams


def train(rd, *, kind, members, state, data, meta, args, device, speed):
    """A pre-training or fine-tuning stage of the population: `run_stage` with the run's schedule."""
    snapshot_steps = ({args.iters - k * args.snapshot_every for k in range(args.keep_snapshots)}
                      if kind == "pretrain" else set())
    return run_stage(rd, kind=kind, init=state, streams=streams_of(members), elrs=[m["lr"] for m in members],
                     radius=members[0]["radius"], iters=args.iters, batch_size=meta["batch_size"],
                     eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                     snapshot_steps=snapshot_steps, meta=dict(meta, members=members), device=device,
                     schedule=meta["recipe"].get("schedule", "constant"))


def group_data(dataset, data_seeds, device):
    """Per-group train/test tensors of a dataset drawn per data seed (its record's `draw`), for the
    groups' data seeds: x (P, N, D), y (P, N) float."""
    draw = datasets.resolve(dataset).draw
    cache = {d: draw(d) for d in sorted(set(data_seeds))}
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


def eval_rows(pop, data, step, elrs, lr_now=None):
    """metrics.jsonl rows (train and test split for every member) and a one-line digest. lr_now: each
    member's scheduled LR (ELR units) at its last step, as the rows' `lr_now`."""
    state, norms = pop.state(), pop.weight_norm().tolist()
    rows, digest = [], []
    for split in ("train", "test"):
        loss, acc = evaluate(state, pop.P, data[f"x_{split}"], data[f"y_{split}"])
        rows += [{"member": m, "step": step, "split": split, "loss": lo, "acc": ac, "weight_norm": norms[m],
                  "lr": elrs[m]} | ({} if lr_now is None else {"lr_now": lr_now[m]})
                 for m, (lo, ac) in enumerate(zip(loss.tolist(), acc.tolist()))]
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


def population(state, groups, device):
    """An MLPPopulation holding a stacked SIMLP state_dict's weights, on `device`."""
    w = from_state_dict(state)
    return MLPPopulation(*(w[k].to(device) for k in ("w1", "w2", "w3")), groups=groups)


def cpu_state(pop):
    """The population's weights as a stacked SIMLP state_dict on the CPU (the checkpoint layout)."""
    return to_state_dict({k: v.cpu() for k, v in pop.state().items()})


class StopFlag:
    """Set by SIGTERM (preemption, Slurm time limit): the loop checkpoints and exits."""

    def __init__(self):
        self.set = False
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.set = True


def run_stage(rd, *, kind, init, streams, elrs, radius, iters, batch_size, eval_every,
              checkpoint_every, snapshot_steps, meta, device, schedule="constant"):
    """Train `init` (stacked SIMLP state_dict) for `iters` projected-SGD steps; returns results.

    elrs: per-member effective LR (the actual LR is elr * radius^2); streams: per-group seed tuples
    that key the batch order; snapshot_steps: steps whose weights are kept for SWA; schedule:
    constant, or cosine over the stage's steps (step t at lr x schedule_factor(t, iters), a function
    of t alone, so a resumed run takes the same steps). Writes metrics rows every `eval_every` steps
    and a resumable checkpoint every `checkpoint_every`.
    """
    data, groups = group_data(meta["dataset"], [s[0] for s in streams], device), len(streams)
    pop = population(init, groups, device)
    lr = torch.tensor(elrs, dtype=torch.float32, device=device) * radius ** 2

    def step_lrs(a, b):
        """The LRs of steps a .. b-1: (M,) at a constant LR, else (b - a, M), one row per step."""
        if schedule == "constant":
            return lr
        f = [schedule_factor(schedule, t, iters) for t in range(a, b)]
        return torch.tensor(f, dtype=torch.float64, device=device).view(-1, 1) * lr.double().view(1, -1)

    lr_now = lambda: [e * schedule_factor(schedule, max(step - 1, 0), iters) for e in elrs]  # noqa: E731
    step, snaps = 0, {}
    ckpt = checkpoint.load(rd.last_ckpt, kinds=[kind])
    if ckpt is not None:
        step, snaps = ckpt["step"], ckpt["snapshots"]
        pop = population(ckpt["state"], groups, device)
        rd.truncate_metrics(step)
        print(f"resuming {rd.path} from step {step}")
    else:
        rd.truncate_metrics(-1)  # rows of an attempt that died before its first checkpoint
        rows, digest = eval_rows(pop, data, 0, elrs, lr_now())
        rd.append_metrics(rows)
        print(f"step {0:>7}/{iters} | {digest}")

    def save_last():
        checkpoint.save(rd.last_ckpt, dict(meta, kind=kind, step=step, snapshots=snaps, state=cpu_state(pop)))

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
            pop.sgd_steps(xs[gidx, b], ys[gidx, b], step_lrs(done, end), radius)
            done = end
            if done in snapshot_steps:
                snaps[done] = {k: v.clone() for k, v in cpu_state(pop).items()}
            if stop.set:
                stop_at = done
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - t0
        bar.update(stop_at - step)
        step = stop_at
        if step % eval_every == 0 or step == iters:  # before a SIGTERM exit too: resuming skips it
            rows, digest = eval_rows(pop, data, step, elrs, lr_now())
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
        rows, _ = eval_rows(pop, data, step, elrs, lr_now())
        rd.append_metrics(rows)
    checkpoint.save(rd.final_ckpt, dict(meta, kind=kind, step=step, snapshots=snaps, state=cpu_state(pop)))
    checkpoint.remove(rd.last_ckpt)  # superseded by final.pt
    return {"step": step, "members": final_metrics(rows, pop.M), "train_seconds": train_seconds,
            "model_iters_per_second": pop.M * (step - first) / train_seconds if train_seconds else None}
