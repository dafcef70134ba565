"""Geometry between solutions: known answers for angles, sphere interpolation, barriers, at-loss reads."""
import math

import pytest
import torch

from analysis.geometry import at_loss, barrier
from engine.sphere import angle, flat_si, interpolate


def _weights(seed, shapes=((4, 3, 3, 3), (8, 4, 3, 3), (10, 8))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


def _norm(ws):
    return math.sqrt(sum(float((w.double() ** 2).sum()) for w in ws))


# ---- flat_si

def test_flat_si_order_and_dtype():
    ws = _weights(0)
    v = flat_si(ws)
    assert v.dtype == torch.float64 and v.dim() == 1 and v.numel() == sum(w.numel() for w in ws)
    assert torch.equal(v[:ws[0].numel()], ws[0].reshape(-1).double())
    # a dict goes in sorted-key order, whatever the insertion order
    d = {"b": ws[1], "a": ws[0], "c": ws[2]}
    assert torch.equal(flat_si(d), v)
    assert torch.equal(flat_si(ws[2]), ws[2].reshape(-1).double())


# ---- angle

def test_angle_known_values():
    ws = _weights(0)
    assert angle(ws, ws) == pytest.approx(0.0, abs=1e-7)
    assert angle(ws, [-w for w in ws]) == pytest.approx(math.pi, abs=1e-7)
    assert angle(ws, [3.7 * w for w in ws]) == pytest.approx(0.0, abs=1e-7)
    assert angle(ws, [-0.2 * w for w in ws]) == pytest.approx(math.pi, abs=1e-7)
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    assert angle(e1, e2) == pytest.approx(math.pi / 2, abs=1e-12)
    assert angle(e1, torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(math.pi / 4, abs=1e-12)
    assert isinstance(angle(e1, e2), float)


def test_angle_scale_invariant_and_float64():
    # weights in float64 so the scaling itself adds no float32 rounding
    a, b = [w.double() for w in _weights(0)], [w.double() for w in _weights(1)]
    ref = angle(a, b)
    assert 0 < ref < math.pi
    assert angle([5 * w for w in a], [0.01 * w for w in b]) == pytest.approx(ref, abs=1e-12)
    # directions 1e-6 rad apart: float32 rounds the cosine 1 - 5e-13 to 1 and returns 0; float64
    # resolves it (arccos near 1 amplifies the cosine's 1e-16 rounding to ~1e-16 / theta absolute)
    x = torch.zeros(100_000, dtype=torch.float64)
    y = torch.zeros_like(x)
    x[0], y[0], y[1] = 1.0, math.cos(1e-6), math.sin(1e-6)
    assert angle(x, y) == pytest.approx(1e-6, rel=1e-3)


def test_angle_rejects_mismatch():
    a = _weights(0)
    with pytest.raises(ValueError):
        angle(a, a[:2])
    with pytest.raises(ValueError):
        angle({"x": a[0]}, {"y": a[0]})
    with pytest.raises(ValueError):
        angle(a, [torch.zeros_like(w) for w in a])


# ---- interpolate

@pytest.mark.parametrize("radius", [1.0, 7.5])
def test_interpolate_on_sphere(radius):
    a, b = _weights(0), _weights(1)
    for alpha in (0.0, 0.05, 0.3, 0.5, 0.9, 1.0):
        mid = interpolate(a, b, alpha, radius)
        assert [m.shape for m in mid] == [w.shape for w in a] and mid[0].dtype == a[0].dtype
        assert _norm(mid) == pytest.approx(radius, rel=1e-6)
    # endpoints are the (projected) endpoints themselves
    for alpha, w in ((0.0, a), (1.0, b)):
        got = interpolate(a, b, alpha, radius)
        for g, x in zip(got, w):
            torch.testing.assert_close(g, x * (radius / _norm(w)), atol=1e-6, rtol=1e-6)
    # one common factor: the midpoint is the chord midpoint scaled, so directions are kept
    chord = interpolate(a, b, 0.5, None)
    for g, x, y in zip(chord, a, b):
        torch.testing.assert_close(g, 0.5 * x + 0.5 * y)
    assert angle(interpolate(a, b, 0.5, radius), chord) == pytest.approx(0.0, abs=1e-7)


def test_interpolate_dict_and_tensor():
    a, b = _weights(0), _weights(1)
    da, db = dict(zip("xyz", a)), dict(zip("xyz", b))
    got = interpolate(da, db, 0.25, 2.0)
    assert set(got) == set("xyz")
    for k, g in zip("xyz", interpolate(a, b, 0.25, 2.0)):
        torch.testing.assert_close(got[k], g, atol=0, rtol=0)
    t = interpolate(flat_si(a), flat_si(b), 0.5, 1.0)
    assert isinstance(t, torch.Tensor) and t.norm().item() == pytest.approx(1.0)


def test_interpolate_zero_point_cannot_be_projected():
    a = _weights(0)
    with pytest.raises(ValueError):
        interpolate(a, [-w for w in a], 0.5, 1.0)


# ---- barrier

ALPHAS = [i / 20 for i in range(21)]


def test_barrier_flat_path_is_zero():
    assert barrier([0.12] * 21) == 0.0


def test_barrier_bump_on_slope():
    h = 0.07
    errors = [0.1 + 0.2 * t for t in ALPHAS]
    errors[10] += h
    assert barrier(errors) == pytest.approx(h, abs=1e-12)
    assert barrier(errors, ALPHAS) == pytest.approx(h, abs=1e-12)
    # not the excess over the worse endpoint (that would be 0.2 + 0.07 - 0.3 = -0.03 -> 0)
    assert barrier(errors) > 0


def test_barrier_below_line_is_zero():
    errors = [0.1 + 0.2 * t - 0.05 * math.sin(math.pi * t) for t in ALPHAS]
    assert barrier(errors) == 0.0


def test_barrier_uneven_alphas():
    # line from 0.2 to 0.4; at alpha 0.25 the line is 0.25, the error 0.35
    assert barrier([0.2, 0.35, 0.4], [0.0, 0.25, 1.0]) == pytest.approx(0.10, abs=1e-12)


@pytest.mark.parametrize("errors,alphas", [([0.1], None), ([0.1, 0.2], [0.0, 0.5, 1.0]),
                                           ([0.1, 0.2, 0.3], [0.0, 1.0, 0.5]), ([0.1, 0.2], [0.1, 1.0])])
def test_barrier_rejects(errors, alphas):
    with pytest.raises(ValueError):
        barrier(errors, alphas)


# ---- at_loss

def test_at_loss_linear_case():
    assert at_loss([1e-3, 5e-4], [0.2, 0.1], 6e-4) == pytest.approx(0.12, abs=1e-12)
    # landing exactly on the target gives that checkpoint's value
    assert at_loss([1e-3, 6e-4, 1e-4], [0.2, 0.15, 0.1], 6e-4) == pytest.approx(0.15, abs=1e-12)


def test_at_loss_first_crossing_of_non_monotone():
    losses = [2e-3, 1e-3, 5e-4, 9e-4, 2e-4]
    values = [0.3, 0.2, 0.1, 0.5, 0.05]
    assert at_loss(losses, values, 6e-4) == pytest.approx(0.12, abs=1e-12)


def test_at_loss_not_observed():
    assert at_loss([2e-3, 1e-3, 7e-4], [0.3, 0.2, 0.1], 6e-4) is None      # never gets there
    assert at_loss([5e-4, 4e-4], [0.1, 0.09], 6e-4) is None                # already below at the start
    assert at_loss([], [], 6e-4) is None
    assert at_loss([float("nan"), 5e-4], [0.2, 0.1], 6e-4) is None         # a NaN loss is no crossing


def test_at_loss_rejects_length_mismatch():
    with pytest.raises(ValueError):
        at_loss([1e-3, 5e-4], [0.2], 6e-4)
