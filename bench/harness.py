"""What the benchmarks that train outside train.py share: the setup train.py would train (the model and
its initial weights, the data and their batches, the recipe's optimizer, the sphere), a training loop
for any torch optimizer, and evaluation.

    s = setup(["--dataset", "tick", "--model", "mlp_si"], seed=0, data_seed=0)
    model = s["model"]()                              # model seed 0's initial weights
    out = train(model, opt, s, steps=60000, radius=s["radius"], schedule=lambda t: 1.0)
    acc = accuracy(model, s["x_test"], s["y_test"])

`setup` resolves the flags with train.py's own parser and rules (engine/setup.py), so a benchmark
trains exactly the model, data, batch size and augmentation of the setup; bench/range_test.py's LR
range tests and bench/arms.py's optimizers both use it.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.seeding import generator  # noqa: E402
from data.images import augment_batch, epoch_draws  # noqa: E402
from engine import setup as engine  # noqa: E402
from engine.sphere import make_optimizer, project_params_, recompute_bn_stats  # noqa: E402

OWN_FLAGS = ("--lr", "--seed", "--data_seed", "--out")


def criterion(out, y):
    """Decided by the output's shape, never by a name: one logit per example (the synthetic SI MLP,
    binary labels) -> binary cross-entropy on float labels; one per class -> cross-entropy."""
    if out.ndim == 1:
        return F.binary_cross_entropy_with_logits(out, y.to(out.dtype))
    return F.cross_entropy(out, y)


def setup(train_flags, seed, data_seed=None):
    """What train.py trains for these flags, model seed and data seed, on the CPU: a dict of
    model() (a fresh copy of the initial model), optimizer(params, lr) (the recipe's, actual lr; on the
    sphere a projected one), loader() (a fresh, identically shuffled DataLoader of (x, y) batches, the
    recipe's augmentation per batch), radius (None off the sphere), recipe, steps_per_epoch, and the
    evaluation splits x_val, y_val (None without a validation set), x_test, y_test."""
    given = [f for f in train_flags if f.split("=")[0] in OWN_FLAGS]
    if given:
        raise UserError(f"{given[0]} is not one of the setup's flags: --lr, --seed and --data_seed are the "
                        f"benchmark's own")
    flags = [*train_flags, "--lr", "1", "--seed", str(seed), "--out", os.devnull]  # nothing is written there
    if data_seed is not None:
        flags += ["--data_seed", str(data_seed)]
    args = engine.pretrain_parser().parse_args(flags)
    record, dataset, backend, recipe = engine.resolve_pretrain(args)
    cpu = torch.device("cpu")  # batches are gathered on the CPU; the libraries move them to the device
    data = backend.load_data(dataset, args, cpu)
    model_args = engine.model_args(record, args, data)
    radius = args.radius if args.radius is not None else record.radius  # train.py's rule
    inits, radii = backend.initial_states(record, model_args, [seed], radius if recipe["sphere"] == "on" else False,
                                          data, cpu)
    radius = radii[seed] if recipe["sphere"] == "on" else None

    def model():
        m = models.build(record, seed, model_args)
        m.load_state_dict(inits[seed])
        return m

    def optimizer(params, lr):
        return make_optimizer(params, recipe["optimizer"], lr, recipe["momentum"], recipe["weight_decay"], radius)

    if dataset.per_seed:  # the synthetic data: one dataset per data seed, float vectors
        d = dataset.draw(args.data_seed[0])
        x, y, gather = d["x_train"], d["y_train"], None
        held = {k: d.get(k) for k in ("x_val", "y_val", "x_test", "y_test")}
    else:
        held = {k: data.get(f"xn_{k[2:]}" if k.startswith("x") else k) for k in ("x_val", "y_val", "x_test", "y_test")}
        if recipe["augment"] == "none":  # normalised once, as the image stage does
            x, y, gather = data["xn_train"], data["y_train"], None
        else:  # uint8 images augmented per batch, then normalised (engine/step.py: TrainStep)
            x, y, aug = data["x_train"], data["y_train"], recipe["augment"]
            gather = lambda idx, g: augment_batch(x[idx], epoch_draws(aug, len(idx), generator=g),  # noqa: E731
                                                  data["mean"], data["std"])
    batch = args.batch_size

    def loader():
        order, draws = generator("range_test_batches", seed), generator("range_test_augment", seed)

        def collate(idx):
            idx = torch.tensor(idx)
            return (x[idx] if gather is None else gather(idx, draws)), y[idx]
        # drop only a last batch of 1 image, as train.py does (train-mode BN needs 2)
        return DataLoader(range(len(y)), batch_size=batch, shuffle=True, generator=order, num_workers=0,
                          collate_fn=collate, drop_last=len(y) % batch == 1)

    return dict(held, model=model, optimizer=optimizer, loader=loader, radius=radius, recipe=recipe,
                steps_per_epoch=len(y) // batch + (len(y) % batch > 1), batch_size=batch)


def batches(s, steps):
    """`steps` training batches of the setup, epoch after epoch of its loader."""
    done = 0
    while done < steps:
        for xb, yb in s["loader"]():
            yield xb, yb
            done += 1
            if done == steps:
                return


def train(model, opt, s, steps, schedule=None, radius=None, on_step=None):
    """Train `model` with the torch optimizer `opt` for `steps` batches of the setup: step t at the
    optimizer's LR times schedule(t) (a torch LambdaLR; None: as the optimizer sets it), then, with a
    radius, all trainable parameters jointly rescaled onto the sphere of that radius (an optimizer that
    is not a projected one of our own, wrapped). on_step(t, opt, model): called after each step (to
    record an effective LR). Returns the mean training loss of the last 10 % of the steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule is not None else None
    model.train()
    tail, n = 0.0, 0
    for t, (xb, yb) in enumerate(batches(s, steps)):
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(xb), yb)
        loss.backward()
        opt.step()
        if radius is not None:
            project_params_(params, radius)
        if on_step is not None:
            on_step(t, opt, model)
        if sched is not None:
            sched.step()
        if t >= 0.9 * steps:
            tail, n = tail + loss.item(), n + 1
    return tail / max(n, 1)


@torch.no_grad()
def accuracy(model, x, y, batch=500):
    """Eval-mode accuracy on (x, y) (a fraction), or None without them."""
    if x is None:
        return None
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        out = model(x[i:i + batch])
        pred = (out > 0).long() if out.ndim == 1 else out.argmax(1)
        correct += (pred == y[i:i + batch].long()).sum().item()
    return correct / len(y)


def recompute_bn(model, s, n_batches=None):
    """BN running statistics recomputed (engine/sphere.py) from the setup's training batches (all of an
    epoch, or the first n_batches): an averaged model's statistics must match its weights."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    steps = n_batches or s["steps_per_epoch"]
    return recompute_bn_stats(model, (xb for xb, _ in batches(s, steps)))


def cosine(total, warmup=0):
    """The LambdaLR factor of step t: linear warm-up over `warmup` steps, then a cosine decay from 1 to 0
    over the remaining ones (step t uses the factor of t, the first step the warm-up's first value)."""
    def factor(t):
        if t < warmup:
            return (t + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(1, total - warmup)))
    return factor
