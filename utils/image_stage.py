"""Train and evaluate image models (PROTOCOL.md sections 2-4 and 6): one loop for every image stage.

train.py (pre-training), finetune.py (fine-tuning) and swa.py (continue at the PLR and average)
differ only in where the members start, which LRs they use and whether the weights are averaged;
all three call `run_image_stage`. A run holds K >= 1 members (LR x model seed; one per Slurm task
in a cluster sweep); they are trained one epoch at a time each, so K members cost K runs' time
and a member's result does not depend on the others:
- its initial weights come from its model seed (models.build), shared by all its LRs;
- its batch order and augmentation come from a generator keyed by (stage, seed, epoch), so any
  epoch's batches can be rebuilt without replaying earlier ones (exact resume, SWA continuing a
  pre-training run with the batches that run would have seen).

The recipe is the run's (flags; the model record's defaults): with the sphere on (SI models: SGD,
momentum 0, weight decay 0, no augmentation) the optimizer steps the trainable parameters at
lr = ELR x R^2 and then rescales all of them jointly to norm R (utils/sphere.py: ProjectedSGD ...);
with it off (the practical ResNet-18: SGD momentum 0.9, weight decay 5e-4, crop + flip) the LR is
used as it is. Parameters with requires_grad=False (a frozen head) are never trained. The recipe's
schedule (--schedule) is constant or cosine over the stage's T = epochs x batches-per-epoch steps
(step t at lr x 0.5 x (1 + cos(pi t / T)): the first step at the full LR); SWA's continuation is
always constant.

Data stay on the device as tensors (data/images.py): the training set normalised once (SI) or as
uint8 augmented per batch (practical); batch indices are slices of one permutation per epoch.
"""
import math
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.images import epoch_draws, normalize
from models import build, resolve
from utils import checkpoint
from utils.args import UserError
from utils.image_step import (TrainStep, autocast, batch_starts, epoch_generator, schedule_factor, speed_setup,
                              train_epoch, use_bf16)
from utils.population import StopFlag, final_metrics
from utils.seeding import generator
from utils.sphere import make_optimizer, recompute_bn_stats, si_norm, si_parameters

STAGE_SALT = {"pretrain": 0, "finetune": 1}  # swa continues pre-training: its batches use salt 0
EVAL_BATCH = {"cpu": 128}  # forward-only batches; big ones are 2-3x slower on CPUs (page faults), others: 1000


# ---------------------------------------------------------------- setup

SMOKE_SIZE = 256  # --smoke: at most this many training and test images


def read_data(record, data_dir, download, train_size, test_size, device, smoke=False):
    """The dataset of a record (data/__init__.py; or its name) on `device`, plus normalised float
    copies of both splits.

    train_size, test_size: keep the first N images of each split (None: all; with `smoke`, at most
    SMOKE_SIZE). The sizes used are in d["train_size"], d["test_size"] (for the run's checkpoint).
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
    for split in ("train", "test"):
        d[f"xn_{split}"] = normalize(d[f"x_{split}"], d["mean"], d["std"])  # (N, C, 32, 32) float32
        d[f"{split}_size"] = len(d[f"y_{split}"])
    return d


def optimizer(model, recipe, elr, radius, device):
    """The recipe's optimizer over the trainable parameters; on the sphere (radius given) a projected
    one at lr = ELR x R^2 that rescales them jointly to norm R after every step."""
    params = si_parameters(model) if radius is not None else [p for p in model.parameters() if p.requires_grad]
    lr = elr * radius ** 2 if radius is not None else elr
    return make_optimizer(params, recipe["optimizer"], lr, recipe["momentum"], recipe["weight_decay"],
                          radius=radius, capturable=device.type == "cuda")


def weight_norm(model, sphere):
    """The norm logged as weight_norm: the SI parameters' (the radius) on the sphere, else all parameters'."""
    if sphere:
        return si_norm(model)
    return math.sqrt(sum(p.detach().double().pow(2).sum().item() for p in model.parameters()))


def load_state(model, state, what):
    """load_state_dict, with a mismatch (another architecture, width or class count) as a UserError."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(f"{what} does not fit {type(model).__name__} ({first})")


def run_data(ckpt, data_dir, device, download=False):
    """The data an image run used, from its checkpoint: its dataset and subset sizes, read from
    data_dir (None: the folder the run read)."""
    from data import resolve as resolve_dataset
    d = ckpt["data"]
    return read_data(resolve_dataset(ckpt["dataset"]), data_dir or d["data_dir"], download, d["train_size"],
                     d["test_size"], device)


def eval_model(ckpt, device, state=None):
    """A model of an image run's architecture for evaluation (the memory format training used on
    `device`), holding `state` when given."""
    model = speed_setup(build(resolve(ckpt["model"]), 0, ckpt["model_args"]), device, "auto", False)
    if state is not None:
        load_state(model, state, "the checkpoint's weights")
    return model


def parent_setup(ckpt, args, device):
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


# ---------------------------------------------------------------- evaluation

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


# ---------------------------------------------------------------- the stage

def run_image_stage(rd, *, kind, members, state, salt, epoch0, epochs, data, meta, batch_size, device,
                    eval_every, checkpoint_every, save_epochs=(), swa=False, bf16=False, channels_last=False,
                    compile_=False, cuda_graph=False, with_sharpness=False):
    """Train every member for `epochs` epochs; returns results.json's content.

    members: members.jsonl rows, each with lr (ELR), seed and radius (None: no sphere);
    state: the members' starting weights, one stacked state_dict (utils/checkpoint.py); meta: what
    the checkpoints record besides (model, model_args, dataset, recipe ...); salt, epoch0: batches of stage epoch
    e (1-based) are those of epoch epoch0 + e under `salt`, so SWA (salt 0, epoch0 = the parent's
    epochs) sees what longer pre-training would have seen. swa: also average each member's weights
    at the start and after every epoch (torch.optim.swa_utils.AveragedModel), then recompute the
    average's BN statistics and evaluate it; the result replaces the trained weights in final.pt.
    with_sharpness: train rows also carry `sharpness` (see `sharpness`; one more pass per evaluation).
    bf16, channels_last, compile_, cuda_graph: the speed switches (utils/image_step.py; bf16 may be "auto").
    """
    record, model_args, recipe = resolve(meta["model"]), meta["model_args"], meta["recipe"]
    sphere, aug = recipe["sphere"] == "on", recipe["augment"]
    # SWA continues pre-training at the PLR: its window is averaged at one constant LR, whatever
    # schedule the parent (whose recipe swa.py inherits) was trained with
    schedule = "constant" if swa else recipe.get("schedule", "constant")
    if schedule != "constant" and cuda_graph:
        # a CUDA graph would replay the LR it was captured with (the LR is a Python float in the step)
        print(f"--schedule {schedule}: CUDA graphs off (the LR changes every step)")
        cuda_graph = False
    bf16 = use_bf16(bf16, device, record.bf16)  # evaluation runs under the same autocast as training
    models, opts, steps, avgs, bases = [], [], [], [], []  # modules, optimizers, training steps, averages, lr0s
    for i, m in enumerate(members):
        model = build(record, m["seed"], model_args)
        load_state(model, checkpoint.member(state, i), f"member {m['member']}'s starting point")
        model = model.to(device)
        models.append(model)
        opts.append(optimizer(model, recipe, m["lr"], m["radius"] if sphere else None, device))
        bases.append([g["lr"] for g in opts[-1].param_groups])  # the schedule's lr0 (before any resume)
        steps.append(TrainStep(model, opts[-1], data, batch_size, aug=aug, device=device, bf16=bf16,
                               channels_last=channels_last, compile_=compile_, cuda_graph=cuda_graph))
        if swa:
            avgs.append(torch.optim.swa_utils.AveragedModel(model, use_buffers=False))
    epoch, pos = 0, None
    ckpt = checkpoint.load(rd.last_ckpt, kinds=[kind])
    if ckpt is not None:
        epoch, pos = ckpt["epoch"], ckpt["pos"]
        for i in range(len(members)):
            models[i].load_state_dict(checkpoint.member(ckpt["state"], i))
            opts[i].load_state_dict(ckpt["opts"][i])
            if swa:
                avgs[i].load_state_dict(ckpt["avgs"][i])
        rd.truncate_metrics(epoch, key="epoch")
        where = f", member {pos['member']} batch {pos['batch']}" if pos else ""
        print(f"resuming {rd.path} from epoch {epoch}{where}")
    else:
        rd.truncate_metrics(-1)
        if swa:
            for a, model in zip(avgs, models):
                a.update_parameters(model)  # the starting point is the window's first checkpoint
        rd.append_metrics(eval_rows(models, members, data, 0, 0, None, sphere, device, bf16,
                                  with_sharpness and batch_size, lr_now=[m["lr"] for m in members]))

    def save(path, pos=None):
        checkpoint.save(path, dict(meta, kind=kind, members=members, epoch=epoch, pos=pos,
                                   state=checkpoint.stack([m.state_dict() for m in models]),
                                   opts=[_cpu(o.state_dict()) for o in opts],
                                   avgs=[_cpu(a.state_dict()) for a in avgs] if swa else None))

    stop, n_train = StopFlag(), len(data["y_train"])
    steps_per_epoch = len(batch_starts(n_train, batch_size))
    total = epochs * steps_per_epoch  # the schedule's T

    def set_lr(i, t):
        """Member i's LR for the stage's step t, a function of (epoch, batch) alone: a resumed run
        (from an epoch's start or from `pos` inside one) steps with exactly the same LRs."""
        f = schedule_factor(schedule, t, total)
        for group, lr0 in zip(opts[i].param_groups, bases[i]):
            group["lr"] = lr0 * f

    def lr_now():
        """Each member's LR (ELR units, like `lr`) at its last step: read from its optimizer."""
        return [m["lr"] * (o.param_groups[0]["lr"] / b[0]) for m, o, b in zip(members, opts, bases)]
    train_seconds, first = 0.0, epoch
    bar = tqdm(total=epochs, initial=epoch, disable=None, unit="epoch", dynamic_ncols=True)
    while epoch < epochs:
        e = epoch + 1
        sums = [torch.zeros(3, dtype=torch.float64, device=device) for _ in members]
        t0 = time.perf_counter()
        for i, (m, step) in enumerate(zip(members, steps)):
            start = 0
            if pos is not None:  # resuming inside this epoch
                if i < pos["member"]:
                    sums[i] += pos["sums"][i].to(device)
                    continue
                start, sums[i] = pos["batch"], pos["sums"][i].to(device)
                pos = None
            g = epoch_generator(salt, m["seed"], epoch0 + e)  # drawn on the CPU: the same on any device
            perm = torch.randperm(n_train, generator=g).to(device)
            draws = epoch_draws(aug, n_train, generator=g, device=device)  # in batch order
            before = None if schedule == "constant" else (lambda b, i=i, k=epoch: set_lr(i, k * steps_per_epoch + b))
            done = train_epoch(step, perm, draws, start, sums[i], stop, before)
            if stop.set:
                save(rd.last_ckpt, pos={"member": i, "batch": done, "sums": [s.cpu() for s in sums]})
                print(f"SIGTERM: checkpoint written at epoch {epoch} + member {i} batch {done} to "
                      f"{rd.last_ckpt}; rerun to resume", flush=True)
                sys.exit(143)
            if swa:
                avgs[i].update_parameters(models[i])
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - t0
        epoch = e
        bar.update(1)
        if epoch % eval_every == 0 or epoch == epochs:
            rows = eval_rows(models, members, data, epoch, epoch * steps_per_epoch, sums, sphere, device, bf16,
                             with_sharpness and batch_size, lr_now=lr_now())
            rd.append_metrics(rows)
            images = len(members) * n_train * (epoch - first) / max(train_seconds, 1e-9)
            tqdm.write(f"epoch {epoch:>4}/{epochs} | {digest(rows)} | {images:,.0f} images/s")
        if epoch in save_epochs:
            save(rd.epoch_ckpt(epoch))
        if epoch % checkpoint_every == 0 and epoch < epochs:
            save(rd.last_ckpt)
    bar.close()
    if swa:  # the averages become the members: BN statistics from one pass, then evaluate
        for a, model, m in zip(avgs, models, members):
            model.load_state_dict(a.module.state_dict())
            recompute_bn_stats(model, bn_batches(data, batch_size, m["seed"]))
        rows = eval_rows(models, members, data, epoch, epoch * steps_per_epoch, None, sphere, device, bf16,
                         lr_now=lr_now())
        rd.append_metrics([dict(r, swa=True) for r in rows])
        print(f"SWA of {epochs + 1} checkpoints | {digest(rows)}")
    final_rows = [r for r in rd.metrics() if r["epoch"] == epoch and r.get("swa", False) == swa]
    save(rd.final_ckpt)
    checkpoint.remove(rd.last_ckpt)
    return {"epoch": epoch, "members": final_metrics(final_rows, len(members)), "train_seconds": train_seconds,
            "images_per_second": len(members) * n_train * (epoch - first) / train_seconds if train_seconds else None}


def _cpu(state):
    """A state_dict (nested for optimizers) with every tensor moved to the CPU, for checkpoints."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu(v) for v in state)
    return state


def eval_rows(models, members, data, epoch, step, sums, sphere, device, bf16, sharpness_batch=None, lr_now=None):
    """metrics.jsonl rows of every member: train (the epoch's running mean over its mini-batches,
    train-mode BN; at epoch 0 and after SWA a clean pass over the training set with eval-mode BN)
    and test (eval-mode BN). sharpness_batch: also the train row's `sharpness` at this batch size.
    lr_now: each member's scheduled LR (ELR units) at its last step, as the rows' `lr_now`."""
    rows = []
    for i, (m, model) in enumerate(zip(members, models)):
        if sums is None:
            train = evaluate(model, data["xn_train"], data["y_train"], device, bf16)
        else:
            s = sums[i].tolist()
            train = (s[0] / s[2], s[1] / s[2])
        test = evaluate(model, data["xn_test"], data["y_test"], device, bf16)
        norm = weight_norm(model, sphere)
        for split, (loss, acc) in (("train", train), ("test", test)):
            rows.append({"member": m["member"], "epoch": epoch, "step": step, "split": split, "loss": loss,
                         "acc": acc, "weight_norm": norm, "lr": m["lr"]})
            if lr_now is not None:
                rows[-1]["lr_now"] = lr_now[i]
        if sharpness_batch:
            rows[-2]["sharpness"] = sharpness(model, data, sharpness_batch, sphere)
    return rows


def digest(rows):
    """One fixed-format line: median loss and accuracy per split, and the accuracy range."""
    out = []
    for split in ("train", "test"):
        r = [x for x in rows if x["split"] == split]
        loss = torch.tensor([x["loss"] for x in r]).median().item()
        acc = torch.tensor([x["acc"] for x in r])
        out.append(f"{split} loss {loss:.4f} acc {acc.median():.1%} [{acc.min():.1%}, {acc.max():.1%}]")
    return " | ".join(out)
