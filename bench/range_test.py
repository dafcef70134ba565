"""The LR range test as practitioners run it (docs/protocol.md section 9), through the libraries themselves.

  python bench/range_test.py --seed 0 --data_seed 0 -- --dataset tick --model mlp_si
  python bench/range_test.py --seed 0 --out rt.json -- --dataset fashion_mnist --model convnet_si --width 8 \
      --train_size 2000 --test_size 2000
  python bench/range_test.py --methods lightning -- --dataset cifar10 --data_dir ~/datasets --model resnet18

Everything after `--` is train.py's flags for the setup, without --lr, --seed, --data_seed, --out: the
model, its initial weights (model seed), the data (data seed, for data drawn per seed), the batch size
and the optimizer (on the sphere for SI models: projected SGD, engine/sphere.py) are exactly what
train.py would use. Prints one line per method: the suggested LR as ELR and as actual lr, the
optimizer steps the test took and its time; --out also writes `range_tests`'s dict as JSON.

  torch_lr_finder  LRFinder(model, optimizer, criterion).range_test(loader, end_lr=10, num_iter=100):
                   exponential ramp of the optimizer's lr, which we start at 1e-7 (fastai's start_lr),
                   loss smoothed (smooth_f 0.05), stops at 5x the best loss; suggestion: the LR of
                   plot(skip_start=10, skip_end=5, suggest_lr=True), the argmin of np.gradient of the
                   kept losses (over their index).
  lightning        Tuner(trainer).lr_find(module, min_lr=1e-8, max_lr=1, num_training=100,
                   mode="exponential", early_stop_threshold=4): loss smoothed (beta 0.98, bias-corrected),
                   stops at 4x the best; suggestion(): the argmin of torch.gradient of the kept losses
                   (first 10 and last 1 skipped, non-finite ones dropped) with respect to the LR values.

Units: our LRs are effective LRs (ELR); the optimizer's actual lr = ELR x R^2 on the sphere of radius R
(R = 1 for the synthetic MLP; for image SI models the SI weights' norm at initialisation, as train.py
prints it). Both tests ramp the actual lr; the suggestion is reported as both (ELR = lr / R^2; the
same value off the sphere). Batches: the setup's batch size, shuffled by a generator keyed by the
seed, cycling through epochs; the recipe's augmentation per batch (data/images.py).

Time per method on a shared 2-core CPU with --threads 1 (plus ~5 s of imports): tick MLP 0.1 s,
Fashion-MNIST ConvNet width 8 on 2000 images 10 s; torch's default 2 threads were 12 s and 35-50 s
there (cores busy). The suggestion depends on the floating-point summation order: that Fashion-MNIST
example's torch-lr-finder suggestion is lr 0.0179 with 1 thread and 0.00705 with 2 (deterministic
for a given thread count).
"""
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.tuner import Tuner
from torch_lr_finder import LRFinder

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core.errors import Parser, UserError, main_guard, own_and_train_flags  # noqa: E402
from harness import criterion, setup  # noqa: E402

START_LR = 1e-7  # torch-lr-finder starts at the optimizer's lr: fastai's start_lr
TLF_TEST = {"end_lr": 10, "num_iter": 100}  # the rest at the library's defaults (exp, smooth_f 0.05, diverge_th 5)
TLF_PLOT = {"skip_start": 10, "skip_end": 5}
PL_TEST = {"min_lr": 1e-8, "max_lr": 1.0, "num_training": 100, "mode": "exponential", "early_stop_threshold": 4.0}
RULES = {"torch_lr_finder": "torch-lr-finder 0.2.2 plot(skip_start=10, skip_end=5): lr[argmin np.gradient(loss)] "
                            "over the kept points' index",
         "lightning": "pytorch-lightning 2.6.6 suggestion(skip_begin=10, skip_end=1): lr[argmin torch.gradient(loss, "
                      "spacing=lr)] over the kept finite points"}


@contextlib.contextmanager
def quiet():
    """The libraries' progress bars, prints, warnings (num_workers hints ...) and log lines ("GPU
    available ...") off, so the bench's own lines stay readable; logger levels restored afterwards."""
    names = ("pytorch_lightning", "lightning_fabric", "lightning", "torch_lr_finder")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.CRITICAL)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def agg_axes():
    """An axes on a figure with the Agg canvas: plot() draws there, no window, no global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure()
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def tlf_suggestion(finder):
    """torch-lr-finder's own suggestion from its history; None where it has none (it raises when
    fewer than skip_start + skip_end + 2 points were recorded)."""
    try:
        _, lr = finder.plot(**TLF_PLOT, suggest_lr=True, ax=agg_axes())
    except RuntimeError:
        return None
    return float(lr)


def run_torch_lr_finder(s, model, device):
    """torch-lr-finder's range test of `model` (restored afterwards: LRFinder.reset)."""
    finder = LRFinder(model, s["optimizer"](model.parameters(), START_LR), criterion, device=device)
    with quiet():
        finder.range_test(s["loader"](), **TLF_TEST)
        lr = tlf_suggestion(finder)
    finder.reset()
    return lr, finder.history


def run_lightning(s, model, device):
    """PyTorch Lightning's lr_find on a minimal LightningModule around `model` (restored afterwards
    from the checkpoint Lightning writes into a temporary directory, deleted here)."""
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.lr = model, START_LR  # lr_find sets the optimizer's lr to min_lr itself

        def training_step(self, batch, batch_idx):
            x, y = batch
            return criterion(self.net(x), y)

        def configure_optimizers(self):
            return s["optimizer"](self.net.parameters(), self.lr)

    # deterministic=... sets torch's global flags (and cudnn.benchmark): the caller's are restored
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    device = torch.device(device)
    hw = {"accelerator": "cpu", "devices": 1} if device.type == "cpu" else {"accelerator": "gpu",
                                                                           "devices": [device.index or 0]}
    try:
        with tempfile.TemporaryDirectory() as root, quiet():
            trainer = pl.Trainer(**hw, max_epochs=-1, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False, deterministic="warn",
                                 default_root_dir=root)
            finder = Tuner(trainer).lr_find(Module(), train_dataloaders=s["loader"](), **PL_TEST)
            lr = finder.suggestion()
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark = flags[2]
        if flags[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = flags[3]
    model.cpu()
    return (None if lr is None else float(lr)), finder.results


METHODS = {"torch_lr_finder": run_torch_lr_finder, "lightning": run_lightning}


def range_tests(train_flags, seed, data_seed=None, methods=("torch_lr_finder", "lightning"), device="cpu"):
    """Each method's range test from the same freshly initialised model of the setup (train.py's
    flags `train_flags`, model seed `seed`, data seed `data_seed`). Returns {method: {"elr", "lr"
    (actual), "radius", "steps", "curve": {"lr", "loss"}, "rule", "seconds"}}; elr and lr None where
    the library suggests nothing."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"--methods {bad[0]}: unknown; known: {', '.join(METHODS)}")
    s, out = setup(list(train_flags), seed, data_seed), {}
    r2 = s["radius"] ** 2 if s["radius"] is not None else 1.0
    for m in methods:
        t0 = time.perf_counter()
        lr, curve = METHODS[m](s, s["model"](), device)
        out[m] = {"elr": None if lr is None else lr / r2, "lr": lr, "radius": s["radius"], "steps": len(curve["lr"]),
                  "curve": {"lr": [float(v) for v in curve["lr"]], "loss": [float(v) for v in curve["loss"]]},
                  "rule": RULES[m], "seconds": time.perf_counter() - t0}
    return out


def main():
    own, train_flags = own_and_train_flags(sys.argv[1:], "--dataset tick --model mlp_si")
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0, help="model seed: the initial weights and the batch order")
    p.add_argument("--data_seed", type=int, default=None, help="data seed, for data drawn per seed (tick; default 0)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"of {', '.join(METHODS)}")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = leave torch's setting)")
    p.add_argument("--out", default=None, help="write the results (suggestions, curves) to this JSON file")
    args = p.parse_args(own)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = range_tests(train_flags, args.seed, args.data_seed, args.methods, args.device)
    for m, r in results.items():
        radius = f"R = {r['radius']:.4g}, " if r["radius"] is not None else ""
        got = (f"ELR {r['elr']:.3g} ({radius}lr {r['lr']:.3g})" if r["lr"] is not None
               else "no suggestion (too few points)")
        print(f"{m:16s} {got}, {r['steps']} steps, {r['seconds']:.1f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main_guard(main)
