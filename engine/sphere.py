"""The sphere of scale-invariant (SI) models (docs/protocol.md section 2): projections, projected
optimizers, angles and interpolation between points of the sphere, and BN-statistics recomputation.

An SI model's trainable parameters are exactly its SI weights (convs and hidden linears; the head is
frozen, BNs have no affine parameters), and they live on ONE sphere: after every step all of them
are multiplied by a common factor so that their total L2 norm is the radius R. Per-tensor spheres
would be wrong for residual networks (models/resnet.py).

`project_` does it for an nn.Module (models/mlp.py's `project_rows_` for a population of SI MLPs
stored as stacked tensors): projected SGD is a plain SGD step followed by it. It does not
synchronise with the host, so it runs every step on CUDA at no cost.

`ProjectedSGD`, `ProjectedAdam`, `ProjectedAdamW` do the same as torch.optim Optimizers (the
parent's step, then the projection of all their trainable parameters), for code that drives an
optimizer itself; `make_optimizer` builds the one a recipe names.

`angle` and `interpolate` measure and walk the sphere (docs/protocol.md section 5): the angle between
two solutions, and the points of the chord between them put back on the sphere.

`recompute_bn_stats` is what SWA and linear interpolation need: averaged or interpolated weights
come with no matching BN running statistics, so they are re-estimated with one pass over data.
All vector maths of `angle` and `interpolate` is in float64: at R ~ 1 with ~10^7 weights the cosine
of two nearby solutions is 1 - 1e-8 or closer, which float32 cannot tell from 1.
"""
import math

import torch
from torch import nn

from core.errors import UserError


def si_parameters(model):
    """The parameters on the sphere: every trainable parameter of an SI model, in module order.
    Whether they really are scale-invariant together is measured, not guessed from their shapes
    (models/custom.py: check_scale_invariant; a conv bias before a norm without affine is fine)."""
    if not getattr(model, "scale_invariant", True):
        raise ValueError(f"{type(model).__name__} is not scale-invariant: it has no sphere")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return params


def si_norm(model):
    """Total L2 norm of the SI parameters, float64, as a Python float (syncs: for logging)."""
    norms = torch._foreach_norm(si_parameters(model), 2, dtype=torch.float64)
    return torch.linalg.vector_norm(torch.stack(norms)).item()


@torch.no_grad()
def project_(model, radius):
    """Rescale all SI parameters by one common factor so that their total norm is `radius`.

    Stays on the device (no .item()), so it can run after every optimizer step without a sync.
    Per-tensor norms are in the parameters' dtype, their combination in float64.
    """
    project_params_(si_parameters(model), radius)


@torch.no_grad()
def project_params_(params, radius):
    """Rescale the tensors `params` (a non-empty list) by one common factor so that their total L2
    norm is `radius`, in place; what `project_` and the Projected* optimizers do after each step.

    Per-tensor norms are in the parameters' dtype (one _foreach_norm), their combination in float64;
    the factor stays a device tensor (no .item(), no host sync), so this can be captured in a CUDA
    graph.
    """
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(params)).double())
    torch._foreach_mul_(params, (radius / total).to(params[0].dtype))


@torch.no_grad()
def recompute_bn_stats(model, batches):
    """Re-estimate every BatchNorm's running mean/var with one train-mode pass over `batches`.

    batches: iterable of model inputs (already normalised, on the model's device). momentum=None
    makes the running statistics the plain average over batches (as torch.optim.swa_utils.update_bn
    does), so they depend neither on the old statistics nor, up to rounding, on the batch order.
    The model's mode and the BNs' momenta are restored afterwards, even on error.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    momenta, was_training = [m.momentum for m in bns], model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += 1
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    if not seen:
        raise ValueError("recompute_bn_stats got no batches")
    return model


# Projected optimizers: real torch.optim.Optimizers, so that any training code (an LR range test, a
# Lightning module, a plain loop) can drive projected SGD/Adam with no call of its own after step().
class _Projected:
    """Mixin: the parent optimizer's step, then `project_params_` of all trainable parameters of all
    param groups jointly (one sphere). The radius is a hyperparameter of every param group, so it
    is saved by state_dict() and restored by load_state_dict()."""

    def __init__(self, params, *args, radius, **kwargs):
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius < float("inf"):
            raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
        super().__init__(params, *args, **kwargs)
        self.defaults["radius"] = float(radius)  # for param groups added later
        for group in self.param_groups:
            group.setdefault("radius", float(radius))

    @property
    def radius(self):
        radii = {group.get("radius", self.defaults["radius"]) for group in self.param_groups}
        if len(radii) != 1:
            raise ValueError(f"param groups disagree on the radius {sorted(radii)}: there is one sphere")
        return radii.pop()

    def step(self, closure=None):
        # The parent's step without torch's step-hook wrapper (the wrapper runs the step hooks, and
        # it wraps this step already): hooks then run once, around the whole projected step.
        parent = super().step.__func__
        if getattr(parent, "hooked", False):
            parent = parent.__wrapped__
        loss = parent(self, closure)
        # Frozen parameters (requires_grad False, e.g. an SI model's fixed head passed in with
        # model.parameters()) are not trained, so they are not on the sphere either.
        project_params_([p for group in self.param_groups for p in group["params"] if p.requires_grad],
                        self.radius)
        return loss


class ProjectedSGD(_Projected, torch.optim.SGD):
    """torch.optim.SGD, then all trainable parameters jointly rescaled to total norm `radius` after each step:
    the projected SGD of docs/protocol.md section 2 with momentum 0, weight decay 0.
    ProjectedSGD(params, lr, ..., radius=R) takes SGD's arguments plus the keyword `radius`."""


class ProjectedAdam(_Projected, torch.optim.Adam):
    """torch.optim.Adam, then all trainable parameters jointly rescaled to total norm `radius` after
    each step."""


class ProjectedAdamW(_Projected, torch.optim.AdamW):
    """torch.optim.AdamW, then all trainable parameters jointly rescaled to total norm `radius` after
    each step."""


OPTIMIZERS = {"sgd": (torch.optim.SGD, ProjectedSGD), "adam": (torch.optim.Adam, ProjectedAdam),
              "adamw": (torch.optim.AdamW, ProjectedAdamW)}


def make_optimizer(params, name, lr, momentum=0.0, weight_decay=0.0, radius=None, capturable=False):
    """The optimizer of a recipe: `name` sgd | adam | adamw; radius None -> the plain torch optimizer,
    else its Projected* form on the sphere of that radius. momentum is SGD's (Adam's are its betas);
    capturable=True makes Adam/AdamW keep their step count on the device (CUDA graphs; SGD needs no
    flag). Bad values raise UserError naming the flag.
    """
    if name not in OPTIMIZERS:
        raise UserError(f"--optimizer {name!r}: unknown; known: {', '.join(OPTIMIZERS)}")
    if not math.isfinite(lr) or lr <= 0:
        raise UserError(f"--lr {lr!r}: the learning rate must be finite and > 0")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise UserError(f"--weight_decay {weight_decay!r}: must be finite and >= 0")
    if name != "sgd" and momentum:
        raise UserError(f"--momentum does not apply to --optimizer {name} (it has betas of its own); "
                        "leave --momentum at 0 or use --optimizer sgd")
    if not math.isfinite(momentum) or not 0 <= momentum < 1:
        raise UserError(f"--momentum {momentum!r}: must be in [0, 1)")
    if radius is not None and (not math.isfinite(radius) or radius <= 0):
        raise UserError(f"--radius {radius!r}: the sphere's radius must be finite and > 0")
    plain, projected = OPTIMIZERS[name]
    kwargs = dict(lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        kwargs["momentum"] = momentum
    elif capturable:
        kwargs["capturable"] = True
    return plain(params, **kwargs) if radius is None else projected(params, radius=radius, **kwargs)


# ---------------------------------------------------------------- angles and paths on the sphere

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
