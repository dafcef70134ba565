"""Synthetic "tick" data (docs/protocol.md section 7).

An input is 16 two-dimensional tick features side by side (32 numbers); every feature is drawn
from the same class-conditional distribution, so each one alone classifies the data perfectly and
all 16 are equally useful. For one feature (x1, x2) in [-2, 2]^2 with margin m = 0.1 * sqrt(2):
  class 0: |x1| - 2 + m <= x2 <= |x1| - m          (the V-shaped band)
  class 1: x2 >= |x1| + m  or  x2 <= |x1| - 2 - m   (above or below it)
The decision boundary is the pair of curves x2 = |x1| and x2 = |x1| - 2.

Single-feature test set i: feature i is drawn as usual and the other 15 lie on the decision
boundary (x1 ~ U[-2, 2], x2 = |x1| + s, s in {0, -2}), so they carry no class information; a
model's accuracy on set i measures how much it relies on feature i.

Every data seed has 512 training points, 2000 validation points (for choices: the recommended PLR,
2A) and 2000 test points (for reporting); everything is a function of the data seed alone
(core/seeding.py).
"""
import math

import torch

from core.seeding import generator

N_FEATURES = 16
MARGIN = 0.1 * math.sqrt(2)
N_TRAIN, N_VAL, N_TEST = 512, 2000, 2000


def class_margin(points):
    """Signed distance-like margin of 2-D points (..., 2) to the tick boundary, in x2 units.

    Positive when the point lies inside its class region with at least that much room: returns
    (band, outer) where band = min(x2 - (|x1| - 2), |x1| - x2) is > 0 inside the class-0 band and
    outer = max(x2 - |x1|, |x1| - 2 - x2) is > 0 in the class-1 region.
    """
    a, x2 = points[..., 0].abs(), points[..., 1]
    band = torch.minimum(x2 - (a - 2), a - x2)
    outer = torch.maximum(x2 - a, a - 2 - x2)
    return band, outer


def sample_feature(labels, g):
    """One tick feature per label, uniform on its class region: (n,) labels -> (n, 2) points.

    Rejection sampling from U[-2, 2]^2 in vectorised rounds; deterministic in the generator.
    """
    n = labels.shape[0]
    out = torch.empty(n, 2)
    for cls in (0, 1):
        need = int((labels == cls).sum())
        got = []
        while need > 0:
            cand = torch.rand(4 * need + 64, 2, generator=g) * 4 - 2
            band, outer = class_margin(cand)
            ok = cand[band >= MARGIN] if cls == 0 else cand[outer >= MARGIN]
            got.append(ok[:need])
            need -= got[-1].shape[0]
        out[labels == cls] = torch.cat(got)
    return out


def on_boundary(n, g):
    """n points (n, 2) on the decision boundary: x1 ~ U[-2, 2], x2 = |x1| + s, s in {0, -2}."""
    x1 = torch.rand(n, generator=g) * 4 - 2
    s = torch.randint(0, 2, (n,), generator=g).float() * -2
    return torch.stack([x1, x1.abs() + s], dim=1)


def balanced_labels(n, g):
    """n labels, half of each class, in random order."""
    y = torch.arange(n) % 2
    return y[torch.randperm(n, generator=g)]


def make_split(n, g, single_feature=None):
    """(x (n, 32), y (n,)) with every feature informative, or only `single_feature` informative."""
    y = balanced_labels(n, g)
    feats = []
    for i in range(N_FEATURES):
        informative = single_feature is None or i == single_feature
        feats.append(sample_feature(y, g) if informative else on_boundary(n, g))
    return torch.cat(feats, dim=1), y


def tick_data(data_seed, n_train=N_TRAIN, n_test=N_TEST, n_val=N_VAL):
    """Train, validation and test sets of one data seed: dict of x_train, y_train, x_val, y_val, x_test,
    y_test. The validation set is drawn from the same distribution by a stream of its own: it takes
    nothing from the training set, and the training and test sets are those of a draw without it."""
    x_tr, y_tr = make_split(n_train, generator("tick_train", data_seed))
    x_va, y_va = make_split(n_val, generator("tick_val", data_seed))
    x_te, y_te = make_split(n_test, generator("tick_test", data_seed))
    return {"x_train": x_tr, "y_train": y_tr, "x_val": x_va, "y_val": y_va, "x_test": x_te, "y_test": y_te}


def single_feature_sets(data_seed, n=N_TEST):
    """The 16 single-feature test sets of one data seed: x (16, n, 32), y (16, n)."""
    xs, ys = zip(*(make_split(n, generator("tick_single", data_seed, i), single_feature=i)
                   for i in range(N_FEATURES)))
    return torch.stack(xs), torch.stack(ys)
