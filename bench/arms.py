"""What practitioners use instead of choosing an LR, each through its own package at its documented
defaults (docs/protocol.md section 9), on a setup's model and data, for bench/lr_pick.py.

    s = harness.setup(train_flags, seed=100, data_seed=100)
    out = train_arm("prodigy", s, steps=60000, sphere=True)   # {"val_acc", "test_acc", "effective_lr", ...}

  prodigy        prodigyopt.Prodigy(lr=1.0) (its defaults: betas (0.9, 0.999), weight decay 0, d0 1e-6),
                 cosine decay to 0 over the run, as its README advises
  dadaptation    dadaptation.DAdaptSGD(lr=1.0, momentum=0) for SGD recipes, DAdaptAdam(lr=1.0) for Adam
                 recipes, with the usual cosine decay on top
  schedulefree   schedulefree.SGDScheduleFree(lr=1.0, momentum=0.9) for SGD recipes,
                 AdamWScheduleFree(lr=0.0025) for Adam recipes, a linear warm-up over the first 5 % of
                 the steps (warmup_steps, as its examples), optimizer.train() while training and
                 optimizer.eval() (the averaged weights) before evaluating, BN statistics then recomputed
                 at the averaged weights over 50 training batches (its README)
  default        a good fixed default: for SGD recipes SGD lr 0.1, momentum 0.9, weight decay 5e-4 with a
                 cosine decay; for Adam recipes AlgoPerf's NAdamW baseline (torch.optim.NAdam lr 1.7486e-3,
                 betas (0.93266, 0.99552), decoupled weight decay 0.081216, 2 % linear warm-up, cosine)

Every arm trains the setup's model from the seed's initial weights on its data, batch size and
augmentation for `steps` steps (lr_pick.py: the setup's pre-training + fine-tuning length). On a
scale-invariant setup an LR-free optimizer runs either on the sphere (`sphere=True`: after each of
its steps all trainable weights are rescaled jointly to the radius, so only its step-size rule
differs from ours; Schedule-Free's second sequence z, its SGD iterates, is rescaled with them) or
off it, as a user of a plain model would. The effective LR it used is
recorded: its step size (Prodigy's and D-Adaptation's d x lr, Schedule-Free's scheduled lr), divided
by the squared norm of the weights where the model is scale-invariant (the ELR of our sweeps: lr / R^2
on the sphere, lr / ||w||^2 off it), sampled at 100 points of the run.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import accuracy, cosine, recompute_bn, setup, train  # noqa: E402  (puts the repository on the path)
from core.errors import Parser, UserError, main_guard, own_and_train_flags  # noqa: E402
from engine.sphere import project_params_  # noqa: E402

ARMS = ("prodigy", "dadaptation", "schedulefree", "default")
LR_FREE = ("prodigy", "dadaptation", "schedulefree")
PACKAGES = {"prodigy": "prodigyopt", "dadaptation": "dadaptation", "schedulefree": "schedulefree"}
SF_WARMUP = 0.05  # Schedule-Free: warm-up share of the steps
NADAMW = {"lr": 1.7486e-3, "betas": (0.93266, 0.99552), "weight_decay": 0.081216, "warmup": 0.02}


def adam_recipe(recipe):
    return recipe["optimizer"] in ("adam", "adamw")


def optimizer(arm, params, recipe, steps):
    """The arm's optimizer over `params` and its LambdaLR schedule factor (None: the optimizer's own)."""
    if arm == "prodigy":
        from prodigyopt import Prodigy
        return Prodigy(params, lr=1.0), cosine(steps)
    if arm == "dadaptation":
        from dadaptation import DAdaptAdam, DAdaptSGD
        opt = DAdaptAdam(params, lr=1.0) if adam_recipe(recipe) else DAdaptSGD(params, lr=1.0, momentum=0.0)
        return opt, cosine(steps)
    if arm == "schedulefree":
        from schedulefree import AdamWScheduleFree, SGDScheduleFree
        warmup = max(1, round(SF_WARMUP * steps))
        opt = (AdamWScheduleFree(params, lr=0.0025, warmup_steps=warmup) if adam_recipe(recipe)
               else SGDScheduleFree(params, lr=1.0, momentum=0.9, warmup_steps=warmup))
        return opt, None
    if arm == "default":
        if adam_recipe(recipe):
            opt = torch.optim.NAdam(params, lr=NADAMW["lr"], betas=NADAMW["betas"], weight_decay=NADAMW["weight_decay"],
                                    decoupled_weight_decay=True)
            return opt, cosine(steps, warmup=max(1, round(NADAMW["warmup"] * steps)))
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4), cosine(steps)
    raise ValueError(f"unknown arm {arm!r}")


def step_size(arm, group):
    """The step size the arm's optimizer takes now (the LR of our sweeps' units before the sphere)."""
    if arm in ("prodigy", "dadaptation"):
        return group["d"] * group["lr"]
    if arm == "schedulefree":
        return group.get("scheduled_lr", group["lr"])
    return group["lr"]


def train_arm(arm, s, steps, sphere=False, keep_model=False):
    """Train the setup's model (harness.setup's `s`) with `arm` for `steps` steps; returns its final
    validation and test accuracy, the effective LR along the run (and its geometric mean), the tail
    training loss (keep_model: also the trained "model" and its "optimizer")."""
    model = s["model"]()
    params = [p for p in model.parameters() if p.requires_grad]
    scale_invariant = getattr(model, "scale_invariant", False)
    radius = s["radius"] if sphere else None
    if sphere and radius is None:
        raise ValueError(f"{arm} on the sphere: the setup has no sphere")
    opt, schedule = optimizer(arm, params, s["recipe"], steps)
    every, trace = max(1, steps // 100), []

    def record(t, opt, model):
        if sphere and arm == "schedulefree":  # its SGD iterates z go onto the sphere with the weights
            project_params_([opt.state[p]["z"] for p in params], radius)
        if t % every == 0 or t == steps - 1:
            lr = float(step_size(arm, opt.param_groups[0]))
            norm2 = sum(float(p.detach().double().pow(2).sum()) for p in params) if scale_invariant else 1.0
            trace.append((t, lr, lr / norm2))

    if arm == "schedulefree":
        opt.train()
    loss = train(model, opt, s, steps, schedule=schedule, radius=radius, on_step=record)
    if arm == "schedulefree":
        opt.eval()  # the averaged weights, then BN statistics that match them
        recompute_bn(model, s, n_batches=50)
    elrs = [e for _, _, e in trace if e > 0 and math.isfinite(e)]
    kept = {"model": model, "optimizer": opt} if keep_model else {}
    return kept | {"val_acc": accuracy(model, s["x_val"], s["y_val"]), "test_acc": accuracy(model, s["x_test"], s["y_test"]),
            "train_loss_tail": loss, "sphere": sphere, "steps": steps,
            "effective_lr": math.exp(sum(map(math.log, elrs)) / len(elrs)) if elrs else None,
            "effective_lr_trace": [{"step": t, "lr": lr, "elr": e} for t, lr, e in trace]}


def main():
    """python bench/arms.py --arm prodigy [--sphere] --seed S [--data_seed D] --steps N --out F.json -- TRAIN FLAGS"""
    own, flags = own_and_train_flags(sys.argv[1:], "--dataset tick --model mlp_si")
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--arm", required=True, choices=ARMS)
    p.add_argument("--sphere", action="store_true", help="rescale onto the setup's sphere after every step")
    p.add_argument("--seed", type=int, required=True, help="model seed")
    p.add_argument("--data_seed", type=int, default=None, help="data seed, for data drawn per seed")
    p.add_argument("--steps", type=int, required=True, help="training steps (batches)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--out", required=True, help="the result, as JSON")
    args = p.parse_args(own)
    if args.arm in PACKAGES:
        try:
            __import__(PACKAGES[args.arm])
        except ImportError:
            raise UserError(f"--arm {args.arm} needs the package {PACKAGES[args.arm]}: "
                            f"pip install -r bench/requirements.txt")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # dropout's draws (the ViT): the same in every run of this command
    out = train_arm(args.arm, setup(flags, args.seed, args.data_seed), args.steps, args.sphere)
    with open(f"{args.out}.tmp", "w") as f:
        json.dump(dict(out, arm=args.arm, seed=args.seed, data_seed=args.data_seed), f)
    os.replace(f"{args.out}.tmp", args.out)
    print(f"{args.arm}{' on the sphere' if args.sphere else ''}: val {out['val_acc']}, test {out['test_acc']}, "
          f"effective LR {out['effective_lr']}")


if __name__ == "__main__":
    main_guard(main)
