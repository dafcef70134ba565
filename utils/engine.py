"""What the scripts share between resolving their flags and training: the backend a model record
trains with, the constructor arguments, the start-up lines and what a run's checkpoints record.

Two backends offer the same names to the scripts, which never ask which one they hold: UNIT,
FOREIGN_FLAGS (the other backend's flags, refused), resolve_schedule, check_recipe, length_text,
speed, load_data, parent_data, initial_states, train, check_swa, swa, test_set, member_accuracy,
paths (and, for data drawn per seed, data_seeds):
- utils/population.py: a record's fused population backend (the synthetic SI MLP: thousands of
  members as stacked tensors, in iterations);
- utils/module_backend.py: any nn.Module, one member at a time, in epochs (utils/image_stage.py).
"""
from models import build
from models.custom import parse_model_args
from utils import checkpoint
from utils.args import UserError


def backend(record):
    """The training backend of a model record: its fused population backend, else the module one."""
    if record.population is not None:
        from utils import population
        return population
    from utils import module_backend
    return module_backend


def refuse_foreign(args, backend):
    """Flags of the other backend are an error, not silently ignored."""
    for name in backend.FOREIGN_FLAGS:
        if getattr(args, name, None) not in (None, False, [], "auto"):
            raise UserError(f"--{name} does not apply to this model ({backend.UNIT}); drop it")


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
    return checkpoint.stack([inits[m["seed"]] for m in members])


def meta(args, model_args, recipe, data):
    """What every checkpoint of the run records besides its weights: how to rebuild the model, the
    data and the recipe, so that downstream scripts need only the run directory."""
    return {"model": args.model, "model_args": model_args, "dataset": args.dataset, "recipe": recipe,
            "batch_size": args.batch_size, "data": data.get("record", {})}


def run_meta(meta):
    """The part of `meta` a run's config.json keeps for readers of run directories (report.py): the
    model, its arguments, the dataset, the recipe and the chance level (a constant prediction's
    accuracy, 1 / classes)."""
    return {k: meta[k] for k in ("model", "model_args", "dataset", "recipe")} | {
        "chance": 1.0 / meta["model_args"]["num_classes"]}


def describe(record, model_args, dataset, data, recipe, members, args, device, backend):
    """The start-up lines: what is trained, on what, with which derived values (actual lr = ELR x R^2)."""
    extra = {k: v for k, v in model_args.items() if k not in record.reserved}
    n_params = sum(p.numel() for p in build(record, 0, model_args).parameters() if p.requires_grad)
    print(f"pre-training {len(members)} {record.name} ({', '.join(f'{k}={v}' for k, v in extra.items()) or 'defaults'}"
          f", {n_params:,} trainable parameters) on {dataset.name} ({data['summary']}), {device}, "
          f"{backend.length_text(args)} of batch {args.batch_size}")
    print(f"  recipe: {recipe['optimizer']}, momentum {recipe['momentum']:g}, weight decay {recipe['weight_decay']:g}, "
          f"augmentation {recipe['augment']}, sphere {recipe['sphere']}")
    lines = {}
    for m in members:
        r = m["radius"]
        lines.setdefault((m["seed"], m["lr"]), f"  seed {m['seed']}: ELR {m['lr']:g}" + (
            f", radius R = {r:.4g}, lr = ELR x R^2 = {m['lr'] * r ** 2:.4g}" if r is not None else f", lr {m['lr']:g}"))
    for line in list(lines.values())[:50]:
        print(line)
    if len(lines) > 50:
        print(f"  ... ({len(lines) - 50} more)")
