"""The nn.Module backend (utils/engine.py): any model class, one member at a time, in epochs; the
functions the scripts call, over the stage loop and the evaluation of utils/image_stage.py.

    backend = engine.backend(models.resolve("convnet_si"))   # this module
    backend.resolve_schedule(args, dataset, "pretrain")       # --epochs and the evaluation schedule
    inits, radii = backend.initial_states(record, model_args, seeds, radius, data, device)
    results = backend.train(rd, kind="pretrain", members=..., state=..., ...)
"""
import copy
import os
import time

import torch

from models import build, resolve
from utils import checkpoint
from utils.args import UserError, check_positive, resolve_epoch_schedule
from utils.geometry import angle, barrier, interpolate
from utils.image_stage import (STAGE_SALT, bn_batches, digest, eval_model, eval_rows, evaluate, parent_setup,
                               read_data, run_data, run_image_stage)
from utils.image_step import batch_starts, speed_setup, speed_switches, use_bf16
from utils.population import final_metrics
from utils.rundir import RunDir
from utils.sphere import project_, recompute_bn_stats, si_norm

UNIT = "epochs"
FOREIGN_FLAGS = ("iters", "keep_snapshots", "snapshot_every")  # the population backend's


def resolve_schedule(args, dataset, kind):
    """Stage length (--epochs; the dataset record's default) and the evaluation/checkpoint schedule."""
    args.epochs = args.epochs or (dataset.smoke_lengths if args.smoke else dataset.lengths)[kind]
    check_positive(args.epochs, "--epochs")
    resolve_epoch_schedule(args, args.epochs, getattr(args, "save_epochs", []))


def check_recipe(recipe):
    """Every recipe applies to an nn.Module (the sphere's claim is checked in `initial_states`)."""


def length_text(args):
    return f"{args.epochs} epochs"


def speed(args, device):
    return speed_switches(args, device)


def load_data(dataset, args, device):
    """The data a new run trains on (train.py): the record's, on `device`, with what the run records."""
    d = read_data(dataset, args.data_dir or "datasets", args.download, args.train_size, args.test_size, device,
                  smoke=args.smoke)
    d["in_channels"] = d["x_train"].shape[1]
    d["summary"] = f"{d['train_size']} train / {d['test_size']} test images of {tuple(d['x_train'].shape[1:])}"
    d["record"] = {"data_dir": args.data_dir or "datasets", "train_size": d["train_size"], "test_size": d["test_size"],
                   "image_size": list(d["x_train"].shape[2:])}
    return d


def initial_states(record, model_args, seeds, radius, data, device):
    """Each model seed's initial state_dict and sphere radius. radius: False = no sphere; None = the
    SI weights' norm at initialisation; a number = projected onto that sphere. A model on the sphere
    has its scale-invariance claim checked numerically first (models/custom.py)."""
    from models.custom import check_scale_invariant
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
        if radius is not False and radius is not None:
            project_(model, radius)
        radii[s] = (radius or si_norm(model)) if radius is not False else None
        inits[s] = model.state_dict()
    return inits, radii


def train(rd, *, kind, members, state, data, meta, args, device, speed):
    """A pre-training or fine-tuning stage: `run_image_stage` with the run's schedule."""
    return run_image_stage(rd, kind=kind, members=members, state=state, salt=STAGE_SALT[kind], epoch0=0,
                           epochs=args.epochs, data=data, meta=meta, batch_size=meta["batch_size"], device=device,
                           eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                           save_epochs=set(args.save_epochs), with_sharpness=getattr(args, "sharpness", False),
                           **speed)


def parent_data(ckpt, args, device):
    return parent_setup(ckpt, args, device)


def check_swa(args, ckpt):
    """SWA-N either continues the parent for N - 1 epochs (the evaluation/checkpoint schedule of
    those), or, with --stride K, averages the parent's own kept checkpoints of epochs E - (N-1)K, ...,
    E - K, E (train.py --save_epochs), which must all exist."""
    if args.stride is None:
        return resolve_epoch_schedule(args, args.n_models - 1)
    check_positive(args.stride, "--stride")
    if args.keep_window:
        raise UserError("--keep_window keeps the epochs of a continuation; --stride averages kept ones: drop one")
    parent = RunDir(args.parent)
    window = strided_window(ckpt["epoch"], args.n_models, args.stride)
    if window[0] < 1:
        raise UserError(f"--n_models {args.n_models} --stride {args.stride}: the window {window[0]} .. {window[-1]} "
                        f"reaches before epoch 1 of {args.parent} ({ckpt['epoch']} epochs); average fewer models or "
                        f"use a smaller stride")
    for e in window[:-1]:
        if not os.path.exists(parent.epoch_ckpt(e)):
            raise UserError(f"--n_models {args.n_models} --stride {args.stride}: {args.parent} has no checkpoint of "
                            f"epoch {e} (train.py --save_epochs)")


def strided_window(last, n, stride):
    """The epochs SWA-N averages at a stride: last - (n-1) stride, ..., last."""
    return [last - k * stride for k in reversed(range(n))]


def swa(rd, *, members, ckpt, data, meta, args, device, speed):
    """SWA-N of every member, then BN statistics recomputed with one pass over the shuffled,
    non-augmented training set, and evaluated. Either continue pre-training at the PLR from the
    parent's last epoch E for N - 1 epochs and average epochs E .. E+N-1 (run_image_stage with
    swa=True), or (--stride K) average the parent's own checkpoints of epochs E-(N-1)K .. E."""
    n, e = args.n_models, ckpt["epoch"]
    if args.stride is not None:
        return average_kept(rd, members, ckpt, strided_window(e, n, args.stride), data, meta, device, speed)
    window = list(range(e, e + n))
    print(f"SWA-{n} of {len(members)} {meta['model']}: continue at the PLR from epoch {e} of {meta['parent']} to "
          f"epoch {window[-1]}, average epochs {window}, recompute BN statistics")
    results = run_image_stage(rd, kind="swa", members=members, state=ckpt["state"], salt=0, epoch0=e, epochs=n - 1,
                              data=data, meta=dict(meta, swa_epochs=window), batch_size=meta["batch_size"],
                              device=device, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                              swa=True, save_epochs=set(range(1, n)) if args.keep_window else set(), **speed)
    return dict(results, swa_epochs=window)


def average_kept(rd, members, ckpt, window, data, meta, device, speed):
    """SWA over the parent's kept checkpoints of the epochs in `window` (the last is the parent's
    final one): torch.optim.swa_utils.AveragedModel over them, BN statistics recomputed, evaluated."""
    parent = RunDir(meta["parent"])
    kept = lambda e: checkpoint.load(parent.epoch_ckpt(e), kinds=["pretrain"])["state"]  # noqa: E731
    states = [ckpt["state"] if e == ckpt["epoch"] else kept(e) for e in window]
    print(f"SWA-{len(window)} of {len(members)} {meta['model']}: average the checkpoints of epochs {window} of "
          f"{meta['parent']}, recompute BN statistics")
    record, sphere = resolve(meta["model"]), meta["recipe"]["sphere"] == "on"
    models = []
    for i, m in enumerate(members):
        model = speed_setup(build(record, m["seed"], meta["model_args"]), device, speed["channels_last"], False)
        avg = torch.optim.swa_utils.AveragedModel(model, use_buffers=False)
        for state in states:
            model.load_state_dict(checkpoint.member(state, i))
            avg.update_parameters(model)
        model.load_state_dict(avg.module.state_dict())
        recompute_bn_stats(model, bn_batches(data, meta["batch_size"], m["seed"]))
        models.append(model)
    bf16 = use_bf16(speed["bf16"], device, record.bf16)
    steps = ckpt["epoch"] * len(batch_starts(len(data["y_train"]), meta["batch_size"]))
    rows = eval_rows(models, members, data, ckpt["epoch"], steps, None, sphere, device, bf16)
    rows = [dict(r, swa=True) for r in rows]
    rd.truncate_metrics(-1)
    rd.append_metrics(rows)
    print(f"SWA of {len(window)} checkpoints | {digest(rows)}")
    checkpoint.save(rd.final_ckpt, dict(meta, kind="swa", members=members, epoch=ckpt["epoch"], pos=None,
                                        state=checkpoint.stack([mod.state_dict() for mod in models]), opts=[],
                                        avgs=None, swa_epochs=window))
    return {"epoch": ckpt["epoch"], "members": final_metrics(rows, len(members)), "swa_epochs": window}


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
    """Geometry: per pair (angle, train_err, test_err) along the re-projected linear path (`path`).
    pairs: (name, (plr, seed, data_seed), (ckpt, i), (ckpt, j))."""
    data, out, t0 = run_data(pairs[0][2][0], args.data_dir, device), [], time.perf_counter()
    for p, k, (ca, i), (cb, j) in pairs:
        out.append(path(ca, i, cb, j, alphas, data, device))
        print(f"  {p:8s} PLR {k[0]:<8g} seed {k[1]}: angle {out[-1][0] or float('nan'):.3f} rad, barrier "
              f"train {barrier(out[-1][1]):.2%} test {barrier(out[-1][2]):.2%} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return out


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
