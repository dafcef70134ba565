"""The synthetic SI MLP's fused population backend: thousands of members as stacked tensors
(models/mlp.py: MLPPopulation), trained in lockstep by the one stage loop (engine/stage.py), in
iterations.

A population is M = P x G members: P groups, one per data stream (a (data seed, model seed) pair), G
members per group that see the same mini-batches (in the sweep: the PLRs, or PLRs x FLRs). Resuming
and extending are exact: the batch order is a pure function of (stream, step) (data/loader.py), so a
checkpoint needs only the weights and the step. The functions the scripts call are those of
engine/module.py (engine/setup.py lists them); the scripts never ask which backend they hold.
"""
import torch
import torch.nn.functional as F

import data as datasets
from core.errors import UserError
from data.loader import batch_indices
from engine import checkpoint
from engine.args import check_positive
from engine.sphere import angle
from engine.stage import Stage
from engine.step import schedule_factor
from models import build
from models.mlp import BLOCK_STEPS, MLPPopulation, from_state_dict, project_rows_, to_state_dict

STAGE_SALT = {"pretrain": 0, "finetune": 1}
UNIT = "iterations"
FOREIGN_FLAGS = ("epochs", "train_size", "test_size", "val_size", "save_epochs", "data_dir", "download", "bf16",
                 "channels_last", "compile", "cuda_graph", "from_epoch", "sharpness", "keep_window", "stride")
# (stage -> (--eval_every, --checkpoint_every) defaults, and the same under --smoke)
EVERY = {"pretrain": (1000, 5000), "finetune": (2000, 5000)}
SMOKE_EVERY = {"pretrain": (50, 100), "finetune": (50, 100)}
LENGTH = "iters"  # the flag that sets a stage's length


# ---------------------------------------------------------------- flags and set-up

def resolve_schedule(args, dataset, kind):
    """Stage length (--iters; the dataset record's default), evaluation/checkpoint schedule and, when
    pre-training, the SWA snapshots (the last --keep_snapshots, --snapshot_every apart)."""
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
    val = f" / {len(d['y_val'])} validation" if "y_val" in d else ""
    return {"num_classes": int(d["y_train"].max()) + 1, "in_channels": d["x_train"].shape[1], "record": {},
            "summary": f"data seeds {args.data_seed}, {len(d['y_train'])} train{val} / {len(d['y_test'])} test points "
                       f"each"}


def initial_states(record, model_args, seeds, radius, data, device):
    """Each model seed's initial weights (models.build: the SI MLP draws them on the sphere of
    `radius`), as state_dicts, and the radius."""
    return {s: build(record, s, dict(model_args, init_norm=radius)).state_dict() for s in seeds}, \
        {s: radius for s in seeds}


def parent_data(ckpt, args, device):
    """Nothing to load up front: the data are drawn per data seed where they are used."""
    return {}


def stage(kind, args):
    """The Stage of a pre-training or fine-tuning run: --iters steps; pre-training keeps the weights
    of its last --keep_snapshots steps, --snapshot_every apart, for SWA."""
    keep = {args.iters - k * args.snapshot_every for k in range(args.keep_snapshots)} if kind == "pretrain" else ()
    return Stage(kind, args.iters, args.eval_every, args.checkpoint_every, keep=frozenset(keep))


def swa_stage(args, ckpt, parent):
    """SWA-N: the mean of the parent's last N kept snapshots (train.py --keep_snapshots); no training."""
    kept = ckpt.get("kept", [])
    if args.n_models > len(kept):
        raise UserError(f"--n_models {args.n_models}: {args.parent} kept only {len(kept)} snapshots "
                        f"(train.py --keep_snapshots)")
    steps = kept[-args.n_models:]
    print(f"SWA of {len(ckpt['members'])} models over the snapshots at iterations {steps}")
    return Stage("swa", 0, sources=tuple(parent.kept_ckpt("step", s) for s in steps)), {"swa_steps": steps}


# ---------------------------------------------------------------- the trainer

class Trainer:
    """The population's side of the stage loop: `advance` takes blocks of at most BLOCK_STEPS projected
    SGD steps (one MLPPopulation.sgd_steps call each; a SIGTERM is honoured between blocks)."""

    unit = "step"

    def __init__(self, kind, members, state, meta, device, length, schedule="constant"):
        self.streams, self.device, self.length = streams_of(members), device, length
        self.schedule, self.salt, self.batch_size = schedule, STAGE_SALT.get(kind), meta["batch_size"]
        self.data = group_data(meta["dataset"], [s[0] for s in self.streams], device)
        self.elrs, self.radius = [m["lr"] for m in members], members[0]["radius"]
        self.lr = torch.tensor(self.elrs, dtype=torch.float32, device=device) * self.radius ** 2
        self.set_weights(state)

    def set_weights(self, state):
        self.pop = population(state, len(self.streams), self.device)

    def weights(self):
        return {k: v.clone() for k, v in cpu_state(self.pop).items()}

    def state(self):
        return {"state": cpu_state(self.pop)}

    def load(self, ckpt):
        self.set_weights(ckpt["state"])

    def where(self):
        return ""

    def step_lrs(self, a, b):
        """The LRs of steps a .. b-1: (M,) at a constant LR, else (b - a, M), one row per step."""
        if self.schedule == "constant":
            return self.lr
        f = [schedule_factor(self.schedule, t, self.length) for t in range(a, b)]
        return torch.tensor(f, dtype=torch.float64, device=self.device).view(-1, 1) * self.lr.double().view(1, -1)

    def advance(self, done, target, stop):
        xs, ys, groups = self.data["x_train"], self.data["y_train"], len(self.streams)
        idx = batch_indices(self.streams, self.salt, done, target - done, xs.shape[1], self.batch_size)
        idx, gidx, step = idx.to(self.device), torch.arange(groups, device=self.device).view(groups, 1, 1), done
        while step < target and not stop.set:
            end = min(target, step + BLOCK_STEPS)
            b = idx[:, step - done:end - done]  # (P, end - step, B) sample indices of each group's batches
            self.pop.sgd_steps(xs[gidx, b], ys[gidx, b], self.step_lrs(step, end), self.radius)
            step = end
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return step

    def evaluate(self, done):
        lr_now = [e * schedule_factor(self.schedule, max(done - 1, 0), max(self.length, 1)) for e in self.elrs]
        return eval_rows(self.pop, self.data, done, self.elrs, lr_now)

    def speed(self, units, seconds):
        rate = self.pop.M * units / seconds if seconds else None
        return f"{rate or 0:,.0f} model-it/s", {"model_iters_per_second": rate}


def trainer(kind, members, state, data, meta, args, device, speed):
    """The stage's trainer (engine/stage.py) for train.py, finetune.py and swa.py."""
    return Trainer(kind, members, state, meta, device, args.iters if kind != "swa" else 0,
                   meta["recipe"].get("schedule", "constant") if kind != "swa" else "constant")


# ---------------------------------------------------------------- evaluation and measurements

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


def group_data(dataset, data_seeds, device):
    """Per-group train/validation/test tensors of a dataset drawn per data seed (its record's `draw`),
    for the groups' data seeds: x (P, N, D), y (P, N) float."""
    draw = datasets.resolve(dataset).draw
    cache = {d: draw(d) for d in sorted(set(data_seeds))}
    return {k: torch.stack([cache[d][k] for d in data_seeds]).float().to(device)
            for k in cache[data_seeds[0]] if k[:2] in ("x_", "y_")}


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
    """metrics.jsonl rows (train, validation where the data have one, and test split for every member).
    lr_now: each member's scheduled LR (ELR units) at its last step, as the rows' `lr_now`."""
    state, norms = pop.state(), pop.weight_norm().tolist()
    rows = []
    for split in [s for s in ("train", "val", "test") if f"x_{s}" in data]:
        loss, acc = evaluate(state, pop.P, data[f"x_{split}"], data[f"y_{split}"])
        rows += [{"member": m, "step": step, "split": split, "loss": lo, "acc": ac, "weight_norm": norms[m],
                  "lr": elrs[m]} | ({} if lr_now is None else {"lr_now": lr_now[m]})
                 for m, (lo, ac) in enumerate(zip(loss.tolist(), acc.tolist()))]
    return rows


def population(state, groups, device):
    """An MLPPopulation holding a stacked SIMLP state_dict's weights, on `device`."""
    w = from_state_dict(state)
    return MLPPopulation(*(w[k].to(device) for k in ("w1", "w2", "w3")), groups=groups)


def cpu_state(pop):
    """The population's weights as a stacked SIMLP state_dict on the CPU (the checkpoint layout)."""
    return to_state_dict({k: v.cpu() for k, v in pop.state().items()})
