"""What the scripts share between their flags and the stage loop: the backend a model record trains
with, train.py's flags and their resolution, the constructor arguments, the start-up lines and what a
run's checkpoints record.

Two backends offer the same names to the scripts, which never ask which one they hold: UNIT, LENGTH
(the flag of a stage's length), FOREIGN_FLAGS (the other backend's flags, refused), resolve_schedule,
check_recipe, length_text, speed, load_data, parent_data, initial_states, stage, swa_stage, trainer,
test_set, member_accuracy, paths (and, for data drawn per seed, data_seeds):
- engine/population.py: a record's fused population backend (the synthetic SI MLP: thousands of
  members as stacked tensors, in iterations);
- engine/module.py: any nn.Module, one member at a time, in epochs.
Both train through the one stage loop of engine/stage.py.
"""
import data as datasets
import models
from core.errors import Parser, UserError
from engine.args import (check_lrs, check_positive, check_seeds, common_parser, image_parser, recipe_flags,
                         resolve_recipe)
from models.custom import parse_model_args


def backend(record):
    """The training backend of a model record: its fused population backend, else the module one."""
    if record.population is not None:
        from engine import population
        return population
    from engine import module
    return module


def refuse_foreign(args, backend):
    """Flags of the other backend are an error, not silently ignored."""
    for name in backend.FOREIGN_FLAGS:
        if getattr(args, name, None) not in (None, False, [], "auto"):
            raise UserError(f"--{name} does not apply to this model ({backend.UNIT}); drop it")


def check_fits(model, dataset):
    """The model takes the dataset's inputs (a tick MLP takes vectors, image models images)."""
    if model.inputs != dataset.inputs:
        fits = [n for n, r in models.MODELS.items() if r.inputs == dataset.inputs]
        raise UserError(f"model {model.name} takes {model.inputs} inputs but dataset {dataset.name} has "
                        f"{dataset.inputs}s; models for it: {', '.join(fits)}")


# ---------------------------------------------------------------- train.py's flags

def pretrain_parser(description=None):
    """train.py's flags (bench/range_test.py parses a setup's flags with it too)."""
    p = Parser(description=description, parents=[common_parser(), image_parser()])
    p.add_argument("--dataset", default="tick", help=f"a registry name ({', '.join(datasets.DATASETS)}), "
                   "path/to/file.npz or package.module:function")
    p.add_argument("--model", default="mlp_si", help=f"a registry name ({', '.join(models.MODELS)}), "
                   "path/to/file.py:Class or package.module:Class")
    p.add_argument("--model_args", nargs="*", default=[], metavar="KEY=VALUE",
                   help="constructor arguments, values as Python literals (width=8 act=\"'relu'\")")
    p.add_argument("--width", type=int, default=None, help="shorthand for --model_args width=N (MLP hidden units "
                   "32, ConvNet c 32, ResNet-18 k 32 (SI) / 64 (practical))")
    p.add_argument("--lr", type=float, nargs="+", required=True, help="pre-training ELR(s) (PLR)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="model seed(s): initial point, batch order")
    p.add_argument("--data_seed", type=int, nargs="+", default=None,
                   help="data seed(s), for datasets drawn per seed (tick; default 0)")
    p.add_argument("--batch_size", type=int, default=None, help="mini-batch size (default: the model record's, "
                   "else the dataset record's: tick 16, the authors' value (docs/protocol.md section 7); images 128)")
    p.add_argument("--radius", type=float, default=None, help="sphere radius R (default: the model record's; "
                   "tick MLP 1; images: the SI weights' norm at initialisation)")
    p.add_argument("--check_only", action="store_true",
                   help="check the flags (model, dataset, recipe, LRs) and exit without loading data or training")
    recipe_flags(p)
    g = p.add_argument_group("population backend (the synthetic MLP)")
    g.add_argument("--iters", type=int, default=None, help="SGD iterations (default 40000; --smoke 200); a "
                   "longer --iters on a finished constant-LR run continues it")
    g.add_argument("--keep_snapshots", type=int, default=None,
                   help="keep the weights of this many final steps for SWA (default 5; 0 = none)")
    g.add_argument("--snapshot_every", type=int, default=None,
                   help="iterations between SWA snapshots (default 100; --smoke 10)")
    g = p.add_argument_group("module backend (every other model)")
    g.add_argument("--epochs", type=int, default=None, help="epochs (default 200; --smoke 2); a longer --epochs "
                   "on a finished constant-LR run continues it")
    g.add_argument("--train_size", type=int, default=None, help="keep the first N training images "
                   "(default all; --smoke at most 256)")
    g.add_argument("--test_size", type=int, default=None, help="keep the first N test images "
                   "(default all; --smoke at most 256)")
    g.add_argument("--val_size", type=float, default=None, help="the fraction of the training images (after "
                   "--train_size) held out as a fixed validation set, on which the sweep's choices are made "
                   "(default 0.1; 0: none, the paper's protocol, choices on test accuracy; an .npz with x_val, "
                   "y_val brings its own)")
    g.add_argument("--save_epochs", type=int, nargs="*", default=[],
                   help="also keep the weights at these epochs (checkpoints/epoch_NNNN.pt)")
    return p


def resolve_pretrain(args):
    """Validate train.py's flags; returns the model and dataset records, the backend and the recipe."""
    check_lrs(args.lr)
    check_seeds(args.seed, "--seed")
    model, dataset = models.resolve(args.model), datasets.resolve(args.dataset)
    check_fits(model, dataset)
    args.model, args.dataset = models.canonical(args.model), datasets.canonical(args.dataset)
    backend_ = backend(model)
    refuse_foreign(args, backend_)
    if dataset.per_seed:
        args.data_seed = args.data_seed or [0]
        check_seeds(args.data_seed, "--data_seed")
    elif args.data_seed is not None:
        raise UserError(f"--data_seed does not apply to {dataset.name}: its data are fixed; drop it")
    if args.width is not None:
        args.model_args = args.model_args + [f"width={args.width}"]
    parse_model_args(args.model_args)  # a bad KEY=VALUE: one line before anything else
    recipe = resolve_recipe(args, model.recipe)
    backend_.check_recipe(recipe)
    if recipe["sphere"] == "on" and not model.scale_invariant:
        raise UserError(f"--sphere on: {model.name} does not declare scale_invariant = True; a model off the "
                        f"sphere trains with --sphere off")
    if args.radius is not None and not (args.radius > 0 and recipe["sphere"] == "on"):
        raise UserError(f"--radius {args.radius}: needs a positive radius and the sphere on")
    args.batch_size = args.batch_size or (dataset.smoke_batch_size if args.smoke else
                                          model.batch_size or dataset.batch_size)
    check_positive(args.batch_size, "--batch_size")
    backend_.resolve_schedule(args, dataset, "pretrain")
    return model, dataset, backend_, recipe


def pretrain(args):
    """train.py: pre-train every PLR x seed of the flags `args` (pretrain_parser's) into args.out, or
    continue that run (resumed, or extended to a longer length); scan.py calls it for each of its
    runs. Returns the RunDir, or None with --check_only."""
    from engine.args import setup_torch
    from engine.rundir import RunDir
    from engine.stage import run_stage
    model, dataset, backend, recipe = resolve_pretrain(args)
    if args.check_only:
        print(f"flags checked: {model.name} on {dataset.name}, {len(args.lr)} PLRs, {backend.length_text(args)}")
        return None
    device = setup_torch(args)
    speed = backend.speed(args, device)
    data = backend.load_data(dataset, args, device)
    margs = model_args(model, args, data)
    radius = args.radius if args.radius is not None else model.radius
    inits, radii = backend.initial_states(model, margs, args.seed, radius if recipe["sphere"] == "on" else False, data,
                                          device)
    members = [{"member": i, "plr": lr, "flr": None, "seed": s, "data_seed": d, "parent_member": None, "lr": lr,
                "radius": radii[s]}
               for i, (d, s, lr) in enumerate((d, s, lr) for d in (args.data_seed or [None]) for s in args.seed
                                               for lr in args.lr)]
    record = meta(args, margs, recipe, data, members)
    rd = RunDir(args.out)
    if rd.start(args, "pretrain", members, meta=run_meta(record), length=backend.LENGTH) == "complete":
        print(f"{args.out} is complete; nothing to do")
        return rd
    describe(model, margs, dataset, data, recipe, members, args, device, backend)
    trainer = backend.trainer("pretrain", members, member_states(inits, members), data, record, args, device, speed)
    rd.write_results(run_stage(rd, backend.stage("pretrain", args), trainer, record))
    print(f"done: {args.out}")
    return rd


# ---------------------------------------------------------------- what a run records

def model_args(record, args, data):
    """Constructor arguments of the run: the record's defaults (--smoke: its tiny ones), --model_args
    on top, and num_classes / in_channels from the data."""
    given = parse_model_args(args.model_args)
    reserved = [k for k in given if k in record.reserved]
    if reserved:
        raise UserError(f"--model_args {reserved[0]}: set by the data, not by hand")
    out = dict(record.smoke_args if args.smoke else record.args, **given)
    return dict(out, num_classes=data["num_classes"], in_channels=data["in_channels"])


def member_states(inits, members):
    """The members' starting weights as one stacked state_dict: each member its seed's initial
    weights (inits: {seed: state_dict})."""
    from engine import checkpoint
    return checkpoint.stack([inits[m["seed"]] for m in members])


def meta(args, model_args, recipe, data, members):
    """What every checkpoint of the run records besides its weights: how to rebuild the model, the
    data, the recipe and the members, so that downstream scripts need only the run directory."""
    return {"model": args.model, "model_args": model_args, "dataset": args.dataset, "recipe": recipe,
            "batch_size": args.batch_size, "data": data.get("record", {}), "members": members}


def run_meta(meta):
    """The part of `meta` a run's config.json keeps for readers of run directories (report.py): the
    model, its arguments, the dataset, the recipe (with the batch size) and the chance level (a
    constant prediction's accuracy, 1 / classes)."""
    return {k: meta[k] for k in ("model", "model_args", "dataset")} | {
        "recipe": dict(meta["recipe"], batch_size=meta["batch_size"]),
        "chance": 1.0 / meta["model_args"]["num_classes"]}


def describe(record, model_args, dataset, data, recipe, members, args, device, backend):
    """The start-up lines: what is trained, on what, with which derived values (actual lr = ELR x R^2)."""
    extra = {k: v for k, v in model_args.items() if k not in record.reserved}
    n_params = sum(p.numel() for p in models.build(record, 0, model_args).parameters() if p.requires_grad)
    print(f"pre-training {len(members)} {record.name} ({', '.join(f'{k}={v}' for k, v in extra.items()) or 'defaults'}"
          f", {n_params:,} trainable parameters) on {dataset.name} ({data['summary']}), {device}, "
          f"{backend.length_text(args)} of batch {args.batch_size}")
    print(f"  recipe: {recipe['optimizer']}, momentum {recipe['momentum']:g}, weight decay {recipe['weight_decay']:g}, "
          f"augmentation {recipe['augment']}, sphere {recipe['sphere']}, schedule {recipe['schedule']}")
    lines = {}
    for m in members:
        r = m["radius"]
        lines.setdefault((m["seed"], m["lr"]), f"  seed {m['seed']}: ELR {m['lr']:g}" + (
            f", radius R = {r:.4g}, lr = ELR x R^2 = {m['lr'] * r ** 2:.4g}" if r is not None else f", lr {m['lr']:g}"))
    for line in list(lines.values())[:50]:
        print(line)
    if len(lines) > 50:
        print(f"  ... ({len(lines) - 50} more)")
