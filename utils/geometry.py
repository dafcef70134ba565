"""Loss-landscape geometry between solutions (PROTOCOL.md section 5): pure functions on weights
and on already-measured numbers; evaluation (BN recomputation, error rates) lives in the scripts.

Weights are SI parameter sets given as a list/tuple of tensors (e.g. `si_parameters(model)`, in
module order), a dict name -> tensor (taken in sorted-key order), or one tensor. All vector maths
is in float64: at R ~ 1 with ~10^7 weights the cosine of two nearby solutions is 1 - 1e-8 or
closer, which float32 cannot tell from 1.
"""
import math

import torch


def _tensors(w):
    """List of tensors of a weight set in its canonical order (dict: sorted by key)."""
    if isinstance(w, torch.Tensor):
        return [w]
    if isinstance(w, dict):
        return [w[k] for k in sorted(w)]
    if isinstance(w, (list, tuple)):
        return list(w)
    raise TypeError(f"weights must be a tensor, a list/tuple of tensors or a dict of tensors, got {type(w).__name__}")


def _check_pair(a, b):
    """Two weight sets must describe the same parameters: same dict keys, same count and shapes."""
    if isinstance(a, dict) and isinstance(b, dict) and sorted(a) != sorted(b):
        raise ValueError(f"weight dicts have different keys: {sorted(set(a) ^ set(b))}")
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb)):
        raise ValueError(f"weight sets do not match: shapes {[tuple(x.shape) for x in ta]} "
                         f"vs {[tuple(y.shape) for y in tb]}")
    return ta, tb


def flat_si(weights):
    """1-D float64 tensor: all tensors of a weight set flattened and concatenated (dict: sorted keys)."""
    ts = _tensors(weights)
    if not ts:
        raise ValueError("flat_si got an empty weight set")
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in ts])


def angle(a, b):
    """Angle in radians (Python float, 0..pi) between two weight sets, arccos of their cosine.

    Each vector is unit-normalised in float64 before the dot product, and the cosine clamped to
    [-1, 1] so rounding cannot push arccos out of its domain. Scale-free: angle(w, c w) = 0, c > 0.
    Near 0 (and pi) arccos turns the cosine's 1e-16 rounding into ~1e-16 / theta rad of error, so
    angles below ~1e-6 rad lose digits; solutions in this study are degrees apart.
    """
    _check_pair(a, b)
    u, v = flat_si(a), flat_si(b)
    nu, nv = u.norm(), v.norm()
    if nu == 0 or nv == 0:
        raise ValueError("angle of a zero weight vector is undefined")
    cos = torch.dot(u / nu, v / nv).clamp(-1.0, 1.0)
    return math.acos(float(cos))


@torch.no_grad()
def interpolate(a, b, alpha, radius=None):
    """(1 - alpha) a + alpha b for two weight sets, rescaled by one common factor to total norm `radius`.

    Returns the container type of `a` (dict with the same keys, list, or one tensor) with each tensor
    in its original dtype and device; the sum and the norm are taken in float64. radius=None keeps
    the chord point (no projection). alpha outside [0, 1] extrapolates.
    """
    ta, tb = _check_pair(a, b)
    mix = [(1 - alpha) * x.to(torch.float64) + alpha * y.to(torch.float64) for x, y in zip(ta, tb)]
    if radius is not None:
        norm = torch.sqrt(sum((m * m).sum() for m in mix))
        if norm == 0:
            raise ValueError(f"interpolate: the point at alpha={alpha} is zero and cannot be put on the sphere")
        mix = [m * (radius / norm) for m in mix]
    out = [m.to(x.dtype) for m, x in zip(mix, ta)]
    if isinstance(a, torch.Tensor):
        return out[0]
    if isinstance(a, dict):
        return dict(zip(sorted(a), out))
    return out


def barrier(errors, alphas=None):
    """Error barrier along a path: max over alpha of error(alpha) minus the straight line between the
    endpoint errors, clipped at 0 (PROTOCOL: not the excess over the worse endpoint). Python float.

    errors: sequence of errors at `alphas`; alphas default to len(errors) evenly spaced points in
    [0, 1] (21 in the protocol). Given alphas must increase strictly from 0 to 1.
    """
    errors = [float(e) for e in errors]
    n = len(errors)
    if n < 2:
        raise ValueError(f"barrier needs the errors at both endpoints at least, got {n} value(s)")
    alphas = [i / (n - 1) for i in range(n)] if alphas is None else [float(t) for t in alphas]
    if len(alphas) != n:
        raise ValueError(f"barrier: {n} errors but {len(alphas)} alphas")
    if alphas[0] != 0 or alphas[-1] != 1 or any(s >= t for s, t in zip(alphas, alphas[1:])):
        raise ValueError(f"barrier: alphas must increase strictly from 0 to 1, got {alphas}")
    e0, e1 = errors[0], errors[-1]
    return max(0.0, max(e - ((1 - t) * e0 + t * e1) for e, t in zip(errors, alphas)))


def at_loss(losses, values, target):
    """A metric read off at the moment the training loss first falls to `target` (e.g. 6e-4).

    losses: training losses of checkpoints in time order; values: the metric at the same checkpoints.
    Finds the first i with losses[i-1] > target >= losses[i] and interpolates the metric linearly in
    the loss between checkpoints i-1 and i; later re-crossings (after a spike) are ignored. Returns
    None when the crossing is not observed: the loss never gets down to target, or it is already
    <= target at the first checkpoint (then where it crossed is unknown and values[0] would be biased).
    """
    losses, values = [float(x) for x in losses], [float(v) for v in values]
    if len(losses) != len(values):
        raise ValueError(f"at_loss: {len(losses)} losses but {len(values)} values")
    if not math.isfinite(target):
        raise ValueError(f"at_loss: target loss must be finite, got {target}")
    if not losses or losses[0] <= target:
        return None
    # NaN losses compare False both ways, so a diverged checkpoint never counts as a crossing.
    for i in range(1, len(losses)):
        hi, lo = losses[i - 1], losses[i]
        if hi > target >= lo:
            # 0 at checkpoint i-1, 1 at checkpoint i; an infinite loss before is the limit t -> 1
            t = (hi - target) / (hi - lo) if math.isfinite(hi) else 1.0
            return values[i - 1] + t * (values[i] - values[i - 1])
    return None
