"""Loss-landscape geometry between solutions (docs/protocol.md section 5), on already-measured
numbers: the error barrier along a path, and a metric read off at a fixed training loss (appendix G's
sharpness comparison). The paths themselves (angles, re-projected interpolation, BN recomputation,
error rates) are measured by the training backends (engine/population.py, engine/module.py: `paths`,
over engine/sphere.py's `angle` and `interpolate`).
"""
import math


def barrier(errors, alphas=None):
    """Error barrier along a path: max over alpha of error(alpha) minus the straight line between the
    endpoint errors, clipped at 0 (not the excess over the worse endpoint). Python float.

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
