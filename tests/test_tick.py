"""The tick data: geometry of the classes, single-feature sets, determinism in the data seed."""
import torch

from data.loader import batch_indices
from data.tick import MARGIN, N_FEATURES, class_margin, single_feature_sets, tick_data


def features(x):
    return x.view(x.shape[0], N_FEATURES, 2)  # (n, 16, 2)


def test_each_feature_alone_separates_classes_with_margin():
    d = tick_data(3)
    for split in ("train", "test"):
        f, y = features(d[f"x_{split}"]), d[f"y_{split}"]
        assert f.abs().max() <= 2.0
        band, outer = class_margin(f)  # (n, 16)
        # class 0 inside the V band, class 1 outside it, both with at least the margin
        assert (band[y == 0] >= MARGIN - 1e-6).all()
        assert (outer[y == 1] >= MARGIN - 1e-6).all()
        # ... so the rule "x2 <= |x1| and x2 >= |x1| - 2" alone classifies every sample, per feature
        inside = (f[..., 1] <= f[..., 0].abs()) & (f[..., 1] >= f[..., 0].abs() - 2)
        assert (inside == (y == 0).unsqueeze(1)).all()
    assert d["x_train"].shape == (512, 32) and d["x_test"].shape == (2000, 32)
    assert abs(d["y_train"].float().mean() - 0.5) < 0.01


def test_both_class1_regions_are_used():
    f, y = features(tick_data(0)["x_train"]), tick_data(0)["y_train"]
    above = f[..., 1] > f[..., 0].abs()
    c1 = above[y == 1]
    assert 0.2 < c1.float().mean() < 0.8  # above and below the band both occur


def test_single_feature_sets_put_other_features_on_the_boundary():
    x, y = single_feature_sets(1, n=300)
    assert x.shape == (N_FEATURES, 300, 32) and y.shape == (N_FEATURES, 300)
    for i in range(N_FEATURES):
        f = features(x[i])
        band, outer = class_margin(f)
        informative = torch.zeros(N_FEATURES, dtype=torch.bool)
        informative[i] = True
        # feature i: informative with the margin
        assert (band[y[i] == 0, i] >= MARGIN - 1e-6).all() and (outer[y[i] == 1, i] >= MARGIN - 1e-6).all()
        # every other feature exactly on x2 = |x1| or x2 = |x1| - 2
        others = f[:, ~informative]
        on = torch.minimum((others[..., 1] - others[..., 0].abs()).abs(),
                           (others[..., 1] - others[..., 0].abs() + 2).abs())
        assert on.max() < 1e-6
        # and uninformative: the two curves are used equally by both classes
        upper = (others[..., 1] - others[..., 0].abs()).abs() < 1e-6
        assert abs(upper[y[i] == 0].float().mean() - upper[y[i] == 1].float().mean()) < 0.1


def test_data_is_a_function_of_the_seed():
    a, b, c = tick_data(5), tick_data(5), tick_data(6)
    assert torch.equal(a["x_train"], b["x_train"]) and torch.equal(a["y_test"], b["y_test"])
    assert not torch.equal(a["x_train"], c["x_train"])
    assert torch.equal(single_feature_sets(2, n=50)[0], single_feature_sets(2, n=50)[0])


def test_batch_order_is_stateless_and_per_stream():
    full = batch_indices([(0, 1), (2, 3)], 0, 0, 200, 512, 16)
    assert full.shape == (2, 200, 16)
    # any window can be rebuilt alone (resume), and a stream's order ignores its neighbours
    assert torch.equal(batch_indices([(2, 3)], 0, 57, 100, 512, 16)[0], full[1, 57:157])
    # each epoch (32 batches) is a permutation of the 512 samples
    assert torch.equal(full[0, 32:64].flatten().sort().values, torch.arange(512))
    assert not torch.equal(full[0], full[1])
    assert not torch.equal(batch_indices([(0, 1)], 1, 0, 10, 512, 16)[0], full[0, :10])  # stage salt
