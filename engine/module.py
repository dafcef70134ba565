"""The nn.Module backend: any model class, trained by the one stage loop (engine/stage.py) one member
at a time, in epochs; its data, evaluation and measurements.

A run holds K >= 1 members (LR x model seed; one per Slurm task in a cluster sweep); within an epoch
they are trained one after another, so K members cost K runs' time and a member's result does not
depend on the others:
- its initial weights come from its model seed (models.build), shared by all its LRs;
- its batch order and augmentation come from a generator keyed by (stage, seed, epoch), so any
  epoch's batches can be rebuilt without replaying earlier ones (exact resume and extension, SWA
  continuing a pre-training run with the batches that run would have seen).

The recipe is the run's (flags; the model record's defaults): with the sphere on the optimizer steps
the trainable parameters at lr = ELR x R^2 and then rescales all of them jointly to norm R
(engine/sphere.py: ProjectedSGD ...); off it the LR is used as it is. Parameters with
requires_grad=False (a frozen head) are never trained. The schedule (--schedule) is constant or
cosine over the stage's T = epochs x batches-per-epoch steps (engine/step.py: schedule_factor); SWA's
continuation is always constant. Data stay on the device as tensors (data/images.py).
"""
import copy
import math
import os

import torch
import torch.nn.functional as F

from core.errors import UserError
from core.seeding import generator
from data.images import epoch_draws, normalize
from engine import checkpoint
from engine.args import check_positive, resolve_epoch_schedule
from engine.sphere import angle, interpolate, make_optimizer, project_, recompute_bn_stats, si_norm, si_parameters
from engine.stage import Stage
from engine.step import (TrainStep, autocast, batch_starts, epoch_generator, schedule_factor, speed_setup,
                         speed_switches, train_epoch, use_bf16)
from models import build, resolve
from models.custom import check_scale_invariant

STAGE_SALT = {"pretrain": 0, "finetune": 1, "swa": 0}  # swa continues pre-training: its batches use salt 0
EVAL_BATCH = {"cpu": 128}  # forward-only batches; big ones are 2-3x slower on CPUs (page faults), others: 1000
UNIT = "epochs"
FOREIGN_FLAGS = ("iters", "keep_snapshots", "snapshot_every")  # the population backend's
LENGTH = "epochs"  # the flag that sets a stage's length
SMOKE_SIZE = 256  # --smoke: at most this many training and test images
HEAD_NORM = 10.0  # the norm the paper gives a scale-invariant model's fixed last layer
VAL_SIZE = 0.1  # the validation split's share of the training images (train.py --val_size)


# ---------------------------------------------------------------- flags and set-up

def resolve_schedule(args, dataset, kind):
    """Stage length (--epochs; the dataset record's default), the evaluation/checkpoint schedule and,
    when pre-training, the validation split (--val_size)."""
    args.epochs = args.epochs or (dataset.smoke_lengths if args.smoke else dataset.lengths)[kind]
    check_positive(args.epochs, "--epochs")
    if kind == "pretrain":
        args.val_size = VAL_SIZE if args.val_size is None else args.val_size
        if not 0 <= args.val_size < 1:
            raise UserError(f"--val_size {args.val_size:g}: give a fraction of the training images in [0, 1)")
    resolve_epoch_schedule(args, args.epochs, getattr(args, "save_epochs", []))


def check_recipe(recipe):
    """Every recipe applies to an nn.Module (the sphere's claim is checked in `initial_states`)."""


def length_text(args):
    return f"{args.epochs} epochs"


def speed(args, device):
    return speed_switches(args, device)


def read_data(record, data_dir, download, train_size, test_size, device, smoke=False, val_size=0.0):
    """The dataset of a record (data/__init__.py; or its name) on `device`, plus normalised float
    copies of every split.

    train_size, test_size: keep the first N images of each split (None: all; with `smoke`, at most
    SMOKE_SIZE). val_size: the fraction of those training images held out as the validation set,
    fixed by a seed of its own (the same images for every run), the rest kept in their order; 0: no
    validation set (the paper's protocol). Data that bring their own (an .npz's x_val, y_val) keep
    it. The sizes of the splits are in d["train_size"], d["val_size"], d["test_size"], the training images
    before the split in d["train_kept"] (for the checkpoint: reading them again gives the same split).
    """
    if isinstance(record, str):
        from data import resolve as resolve_dataset
        record = resolve_dataset(record)
    dataset = record.name
    d = record.load(data_dir, download, train_size, device)
    if smoke and train_size is None:
        d["x_train"], d["y_train"] = d["x_train"][:SMOKE_SIZE], d["y_train"][:SMOKE_SIZE]
    if smoke and test_size is None:
        test_size = min(SMOKE_SIZE, len(d["y_test"]))
    if test_size is not None:
        if not 1 <= test_size <= len(d["y_test"]):
            raise UserError(f"--test_size {test_size}: {dataset} has {len(d['y_test'])} test images")
        d["x_test"], d["y_test"] = d["x_test"][:test_size], d["y_test"][:test_size]
    d["train_kept"] = n = len(d["y_train"])  # before the validation split: what the run records
    if "y_val" not in d and val_size:
        n_val = round(val_size * n)
        if not 1 <= n_val < n - 1:
            raise UserError(f"--val_size {val_size:g} of {n} training images leaves {n_val} for validation and "
                            f"{n - n_val} for training; both need some")
        perm = torch.randperm(n, generator=generator("validation_split", n)).to(d["y_train"].device)
        val, keep = perm[:n_val].sort().values, perm[n_val:].sort().values
        d["x_val"], d["y_val"] = d["x_train"][val], d["y_train"][val]
        d["x_train"], d["y_train"] = d["x_train"][keep], d["y_train"][keep]
    for split in ("train", "val", "test"):
        if f"y_{split}" in d:
            d[f"xn_{split}"] = normalize(d[f"x_{split}"], d["mean"], d["std"])  # (N, C, H, W) float32
        d[f"{split}_size"] = len(d[f"y_{split}"]) if f"y_{split}" in d else 0
    return d


def load_data(dataset, args, device):
    """The data a new run trains on (train.py): the record's, on `device`, with what the run records."""
    d = read_data(dataset, args.data_dir or "datasets", args.download, args.train_size, args.test_size, device,
                  smoke=args.smoke, val_size=args.val_size)
    d["in_channels"] = d["x_train"].shape[1]
    val = f" / {d['val_size']} validation" if d["val_size"] else ""
    d["summary"] = (f"{d['train_size']} train{val} / {d['test_size']} test images of "
                    f"{tuple(d['x_train'].shape[1:])}")
    d["record"] = {"data_dir": args.data_dir or "datasets", "train_size": d["train_kept"], "test_size": d["test_size"],
                   "val_size": args.val_size, "image_size": list(d["x_train"].shape[2:])}
    return d


def initial_states(record, model_args, seeds, radius, data, device):
    """Each model seed's initial state_dict and sphere radius. radius: False = no sphere; None = the
    SI weights' norm at initialisation; a number = projected onto that sphere. A model on the sphere
    has its scale-invariance claim checked numerically first (models/custom.py), and its frozen
    parameters' norm printed: a fixed head far from the paper's norm 10 makes the logits small or
    large, and training slow or harsh."""
    inits, radii = {}, {}
    for s in seeds:
        model = build(record, s, model_args)
        if not inits:  # the first model: does it take these images, and is the sphere's claim true?
            x = data["xn_train"][:8].cpu()
            try:
                with torch.no_grad():
                    out = copy.deepcopy(model).train()(x)
            except Exception as e:
                raise UserError(f"{record.name} cannot take these {tuple(x.shape[1:])} images: "
                                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            if tuple(out.shape) != (len(x), model_args["num_classes"]):
                raise UserError(f"{record.name} returns {tuple(out.shape)} for a batch of {len(x)}, expected "
                                f"(batch, num_classes) = ({len(x)}, {model_args['num_classes']})")
            if radius is not False:
                check_scale_invariant(model, x)
                frozen_head_note(model)
        if radius is not False and radius is not None:
            project_(model, radius)
        radii[s] = (radius or si_norm(model)) if radius is not False else None
        inits[s] = model.state_dict()
    return inits, radii


def frozen_head_note(model):
    """Print the norm of a scale-invariant model's frozen (not trained) weights, with a warning where a
    weight matrix is far from the norm HEAD_NORM the paper gives the fixed last layer."""
    for name, p in model.named_parameters():
        if not p.requires_grad and p.dim() >= 2:
            norm = p.detach().double().norm().item()
            far = not HEAD_NORM / 3 <= norm <= HEAD_NORM * 3
            print(f"  frozen {name} {tuple(p.shape)}: norm {norm:.3g}" + (
                f"; warning: the paper rescales the fixed last layer to norm {HEAD_NORM:g} (a small head makes "
                f"the logits small and training slow): rescale it in the constructor" if far else ""))


def parent_data(ckpt, args, device):
    """For finetune.py and swa.py: the data of an image parent run (its dataset and subset; --data_dir
    may point elsewhere), checked against the parent's model."""
    data = run_data(ckpt, args.data_dir, device, args.download)
    if data["num_classes"] != ckpt["model_args"]["num_classes"]:
        raise UserError(f"{ckpt['dataset']} has {data['num_classes']} classes but the checkpoint's model "
                        f"{ckpt['model_args']['num_classes']}")
    model = build(resolve(ckpt["model"]), 0, ckpt["model_args"])
    for i, m in enumerate(ckpt["members"]):  # before anything is written
        load_state(model, checkpoint.member(ckpt["state"], i), f"the checkpoint's member {m['member']}")
    return data


def run_data(ckpt, data_dir, device, download=False):
    """The data an image run used, from its checkpoint: its dataset, subset sizes and validation split,
    read from data_dir (None: the folder the run read)."""
    from data import resolve as resolve_dataset
    d = ckpt["data"]
    return read_data(resolve_dataset(ckpt["dataset"]), data_dir or d["data_dir"], download, d["train_size"],
                     d["test_size"], device, val_size=d.get("val_size", 0.0))


def stage(kind, args):
    """The Stage of a pre-training or fine-tuning run: --epochs epochs; --save_epochs kept."""
    return Stage(kind, args.epochs, args.eval_every, args.checkpoint_every, keep=frozenset(args.save_epochs))


def swa_stage(args, ckpt, parent):
    """SWA-N either continues the parent from its last epoch E for N - 1 epochs and averages epochs
    E .. E+N-1 (the evaluation/checkpoint schedule of those; --keep_window keeps them), or, with
    --stride K, averages the parent's own kept checkpoints of epochs E - (N-1)K, ..., E - K and its
    final one (train.py --save_epochs), which must all exist."""
    n, e = args.n_models, ckpt["done"]
    if args.stride is None:
        resolve_epoch_schedule(args, n - 1)
        window = list(range(e, e + n))
        print(f"SWA-{n} of {len(ckpt['members'])} {ckpt['model']}: continue at the PLR from epoch {e} of "
              f"{parent.path} to epoch {window[-1]}, average epochs {window}, recompute BN statistics")
        return Stage("swa", n - 1, args.eval_every, args.checkpoint_every, average=frozenset(range(n)),
                     keep=frozenset(range(1, n)) if args.keep_window else frozenset()), {"swa_epochs": window}
    check_positive(args.stride, "--stride")
    if args.keep_window:
        raise UserError("--keep_window keeps the epochs of a continuation; --stride averages kept ones: drop one")
    window = [e - k * args.stride for k in reversed(range(n))]
    if window[0] < 1:
        raise UserError(f"--n_models {n} --stride {args.stride}: the window {window[0]} .. {window[-1]} reaches "
                        f"before epoch 1 of {args.parent} ({e} epochs); average fewer models or use a smaller stride")
    for k in window[:-1]:
        if not os.path.exists(parent.kept_ckpt("epoch", k)):
            raise UserError(f"--n_models {n} --stride {args.stride}: {args.parent} has no checkpoint of epoch {k} "
                            f"(train.py --save_epochs)")
    print(f"SWA-{n} of {len(ckpt['members'])} {ckpt['model']}: average the checkpoints of epochs {window} of "
          f"{parent.path}, recompute BN statistics")
    sources = tuple(parent.kept_ckpt("epoch", k) for k in window[:-1]) + (parent.final_ckpt,)
    return Stage("swa", 0, sources=sources), {"swa_epochs": window}


# ---------------------------------------------------------------- the trainer

class Trainer:
    """The module backend's side of the stage loop: every member's models, optimizers and training
    steps; `advance` trains whole epochs, member after member, and a SIGTERM stops it after the
    current batch (the position inside the epoch goes into the checkpoint)."""

    unit = "epoch"

    def __init__(self, kind, members, state, data, meta, device, speed, epochs, with_sharpness=False):
        """kind: the stage; SWA's continuation sees the batches longer pre-training would have seen (salt
        0, the epochs after the parent's) at a constant LR; epochs: the stage's length (the schedule's T)."""
        record, recipe = resolve(meta["model"]), meta["recipe"]
        swa = kind == "swa"
        self.members, self.data, self.device, self.salt = members, data, device, STAGE_SALT[kind]
        self.epoch0 = (meta.get("parent_epoch") or 0) if swa else 0
        self.sphere, self.aug, self.batch_size = recipe["sphere"] == "on", recipe["augment"], meta["batch_size"]
        self.schedule = "constant" if swa else recipe.get("schedule", "constant")
        self.with_sharpness = with_sharpness
        schedule = self.schedule
        cuda_graph = speed["cuda_graph"]
        if schedule != "constant" and cuda_graph:
            # a CUDA graph would replay the LR it was captured with (the LR is a Python float in the step)
            print(f"--schedule {schedule}: CUDA graphs off (the LR changes every step)")
            cuda_graph = False
        self.bf16 = use_bf16(speed["bf16"], device, record.bf16)  # evaluation under the same autocast
        self.steps_per_epoch = len(batch_starts(len(data["y_train"]), self.batch_size))
        self.total = epochs * self.steps_per_epoch  # the schedule's T
        self.models, self.opts, self.steps, self.bases = [], [], [], []
        for i, m in enumerate(members):
            model = build(record, m["seed"], meta["model_args"])
            load_state(model, checkpoint.member(state, i), f"member {m['member']}'s starting point")
            model = model.to(device)
            self.models.append(model)
            self.opts.append(optimizer(model, recipe, m["lr"], m["radius"] if self.sphere else None, device))
            self.bases.append([g["lr"] for g in self.opts[-1].param_groups])  # the schedule's lr0
            self.steps.append(TrainStep(model, self.opts[-1], data, self.batch_size, aug=self.aug, device=device,
                                        bf16=self.bf16, channels_last=speed["channels_last"],
                                        compile_=speed["compile_"], cuda_graph=cuda_graph))
        self.pos, self.sums = None, None  # where a SIGTERM stopped inside an epoch; the last epoch's sums

    def state(self):
        return {"state": self.weights(), "opts": [_cpu(o.state_dict()) for o in self.opts], "pos": self.pos}

    def load(self, ckpt):
        for i, model in enumerate(self.models):
            model.load_state_dict(checkpoint.member(ckpt["state"], i))
            self.opts[i].load_state_dict(ckpt["opts"][i])
        self.pos = ckpt.get("pos")

    def where(self):
        return f", member {self.pos['member']} batch {self.pos['batch']}" if self.pos else ""

    def weights(self):
        return checkpoint.stack([m.state_dict() for m in self.models])

    def set_weights(self, state):
        """The averaged weights (SWA): loaded, BN statistics recomputed with one pass over the shuffled,
        non-augmented training set."""
        for i, (model, m) in enumerate(zip(self.models, self.members)):
            model.load_state_dict(checkpoint.member(state, i))
            recompute_bn_stats(model, bn_batches(self.data, self.batch_size, m["seed"]))
        self.sums = None

    def set_lr(self, i, t):
        """Member i's LR for the stage's step t, a function of (epoch, batch) alone: a resumed or extended
        run steps with exactly the same LRs."""
        f = schedule_factor(self.schedule, t, self.total)
        for group, lr0 in zip(self.opts[i].param_groups, self.bases[i]):
            group["lr"] = lr0 * f

    def advance(self, done, target, stop):
        n = len(self.data["y_train"])
        for epoch in range(done, target):
            sums = [torch.zeros(3, dtype=torch.float64, device=self.device) for _ in self.members]
            for i, (m, step) in enumerate(zip(self.members, self.steps)):
                start = 0
                if self.pos is not None:  # resuming inside this epoch
                    if i < self.pos["member"]:
                        sums[i] += self.pos["sums"][i].to(self.device)
                        continue
                    start, sums[i] = self.pos["batch"], self.pos["sums"][i].to(self.device)
                    self.pos = None
                g = epoch_generator(self.salt, m["seed"], self.epoch0 + epoch + 1)  # on the CPU: any device alike
                perm = torch.randperm(n, generator=g).to(self.device)
                draws = epoch_draws(self.aug, n, generator=g, device=self.device)  # in batch order
                before = None if self.schedule == "constant" else (
                    lambda b, i=i, k=epoch: self.set_lr(i, k * self.steps_per_epoch + b))
                finished = train_epoch(step, perm, draws, start, sums[i], stop, before)
                if stop.set:
                    self.pos = {"member": i, "batch": finished, "sums": [s.cpu() for s in sums]}
                    return epoch
            self.sums = sums
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return target

    def lr_now(self):
        """Each member's LR (ELR units, like `lr`) at its last step: read from its optimizer."""
        return [m["lr"] * (o.param_groups[0]["lr"] / b[0]) for m, o, b in zip(self.members, self.opts, self.bases)]

    def evaluate(self, done):
        """metrics.jsonl rows of every member: train (the last epoch's running mean over its mini-batches,
        train-mode BN, where one was just trained; else, e.g. at epoch 0 and after SWA, a clean pass over
        the training set with eval-mode BN), val (where the data have a validation set) and test (eval-mode
        BN); with_sharpness, the train row's `sharpness` too; lr_now: each member's scheduled LR (ELR
        units) at its last step."""
        rows, lr_now = [], self.lr_now()
        for i, (m, model) in enumerate(zip(self.members, self.models)):
            if self.sums is None:
                train = evaluate(model, self.data["xn_train"], self.data["y_train"], self.device, self.bf16)
            else:
                s = self.sums[i].tolist()
                train = (s[0] / s[2], s[1] / s[2])
            held = [(split, evaluate(model, self.data[f"xn_{split}"], self.data[f"y_{split}"], self.device, self.bf16))
                    for split in ("val", "test") if f"xn_{split}" in self.data]
            norm = weight_norm(model, self.sphere)
            for split, (loss, acc) in [("train", train)] + held:
                rows.append({"member": m["member"], "epoch": done, "step": done * self.steps_per_epoch,
                             "split": split, "loss": loss, "acc": acc, "weight_norm": norm, "lr": m["lr"],
                             "lr_now": lr_now[i]})
            if self.with_sharpness:
                rows[-1 - len(held)]["sharpness"] = sharpness(model, self.data, self.batch_size, self.sphere)
        self.sums = None
        return rows

    def speed(self, units, seconds):
        rate = len(self.members) * len(self.data["y_train"]) * units / seconds if seconds else None
        return f"{rate or 0:,.0f} images/s", {"images_per_second": rate}


def trainer(kind, members, state, data, meta, args, device, speed):
    """The stage's trainer (engine/stage.py) for train.py, finetune.py and swa.py."""
    return Trainer(kind, members, state, data, meta, device, speed, 0 if kind == "swa" else args.epochs,
                   with_sharpness=getattr(args, "sharpness", False))


def optimizer(model, recipe, elr, radius, device):
    """The recipe's optimizer over the trainable parameters; on the sphere (radius given) a projected
    one at lr = ELR x R^2 that rescales them jointly to norm R after every step."""
    params = si_parameters(model) if radius is not None else [p for p in model.parameters() if p.requires_grad]
    lr = elr * radius ** 2 if radius is not None else elr
    return make_optimizer(params, recipe["optimizer"], lr, recipe["momentum"], recipe["weight_decay"],
                          radius=radius, capturable=device.type == "cuda")


def load_state(model, state, what):
    """load_state_dict, with a mismatch (another architecture, width or class count) as a UserError."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(f"{what} does not fit {type(model).__name__} ({first})")


def _cpu(state):
    """A state_dict (nested for optimizers) with every tensor moved to the CPU, for checkpoints."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu(v) for v in state)
    return state


# ---------------------------------------------------------------- evaluation and measurements

@torch.no_grad()
def evaluate(model, x, y, device, bf16=False, train_mode=False, batch_size=None):
    """Mean cross-entropy and accuracy on normalised images x (N, C, H, W); eval-mode BN by default.
    With train-mode BN every batch is normalised by its own statistics, so the result depends on the
    batch size: give it (`batch_size`, e.g. the run's) for a result that is the same on every device."""
    model.train(train_mode)
    loss, correct = torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), device=device)
    n = batch_size or EVAL_BATCH.get(device.type, 1000)
    for s in range(0, len(y), n):
        with autocast(device, bf16):
            out = model(x[s:s + n]).float()
        loss += F.cross_entropy(out, y[s:s + n], reduction="sum").double()
        correct += (out.argmax(1) == y[s:s + n]).sum()
    return loss.item() / len(y), correct.item() / len(y)


def weight_norm(model, sphere):
    """The norm logged as weight_norm: the SI parameters' (the radius) on the sphere, else all parameters'."""
    if sphere:
        return si_norm(model)
    return math.sqrt(sum(p.detach().double().pow(2).sum().item() for p in model.parameters()))


def sharpness(model, data, batch_size, sphere):
    """Appendix G's sharpness: the mean over the training set's mini-batches (in order, no shuffle,
    no augmentation, train-mode BN) of the norm of the mini-batch gradient w.r.t. the SI parameters
    (every trainable parameter of a practical model). BN running statistics are left as they were."""
    params = si_parameters(model) if sphere else [p for p in model.parameters() if p.requires_grad]
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.train()
    x, y = data["xn_train"], data["y_train"]
    total, starts = 0.0, batch_starts(len(y), batch_size)
    for s in starts:
        loss = F.cross_entropy(model(x[s:s + batch_size]), y[s:s + batch_size])
        grads = torch.autograd.grad(loss, params)
        total = total + torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    model.load_state_dict(saved, strict=False)
    return float(total) / len(starts)


def bn_batches(data, batch_size, seed):
    """One pass over the shuffled, non-augmented training set: the batches BN statistics are
    recomputed from (SWA, interpolation). The shuffle is keyed by `seed` alone."""
    perm = torch.randperm(len(data["y_train"]), generator=generator("bn_batches", seed))
    perm = perm.to(data["xn_train"].device)
    return (data["xn_train"][perm[s:s + batch_size]] for s in batch_starts(len(perm), batch_size))


def eval_model(ckpt, device, state=None):
    """A model of an image run's architecture for evaluation (the memory format training used on
    `device`), holding `state` when given."""
    model = speed_setup(build(resolve(ckpt["model"]), 0, ckpt["model_args"]), device, "auto", False)
    if state is not None:
        load_state(model, state, "the checkpoint's weights")
    return model


def test_set(ckpt, args, device):
    """The run's test set: normalised x, labels y, and the uint8 images with mean/std (band sets)."""
    d = run_data(ckpt, args.data_dir, device)
    return {"x": d["xn_test"], "y": d["y_test"], "raw": d["x_test"], "mean": d["mean"], "std": d["std"]}


def member_accuracy(ckpt, device):
    """A function (x, y) -> accuracy (M,) float64 of every member of the checkpoint on normalised
    images x (N, C, H, W), y (N,), eval-mode BN; the members' models are built once, for all the
    test sets it is called on."""
    models = [eval_model(ckpt, device, checkpoint.member(ckpt["state"], i)) for i in range(len(ckpt["members"]))]
    return lambda x, y: torch.tensor([evaluate(m, x, y, device)[1] for m in models], dtype=torch.float64)


def paths(pairs, alphas, args, device):
    """Geometry: per pair (angle, train_err, test_err) along the re-projected linear path (`path`),
    one pair after another (a generator: the caller reports each as it comes).
    pairs: (name, (plr, seed, data_seed), (ckpt, i), (ckpt, j))."""
    data = run_data(pairs[0][2][0], args.data_dir, device)
    for _, _, (ca, i), (cb, j) in pairs:
        yield path(ca, i, cb, j, alphas, data, device)


def path(ckpt_a, i, ckpt_b, j, alphas, data, device):
    """One pair of solutions: (angle, train_err, test_err) along the linear path between them, each
    point re-projected onto the sphere (if the run has one) and its BN statistics recomputed."""
    model = eval_model(ckpt_a, device)
    sa, sb = checkpoint.member(ckpt_a["state"], i), checkpoint.member(ckpt_b["state"], j)
    # the path's coordinates: the trainable parameters (on the sphere: the SI weights)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    wa, wb = {n: sa[n] for n in names}, {n: sb[n] for n in names}
    member = ckpt_a["members"][i]
    radius = member["radius"]
    train_err, test_err = [], []
    for a in alphas:
        model.load_state_dict(dict(sa, **interpolate(wa, wb, a, radius)))
        recompute_bn_stats(model, bn_batches(data, ckpt_a["batch_size"], member["seed"]))
        test_err.append(1 - evaluate(model, data["xn_test"], data["y_test"], device)[1])
        train_err.append(1 - evaluate(model, data["xn_train"], data["y_train"], device, train_mode=True,
                                      batch_size=ckpt_a["batch_size"])[1])  # train-mode BN: the run's batches
    return angle(wa, wb) if radius is not None else None, train_err, test_err
