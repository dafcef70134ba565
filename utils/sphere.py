"""The sphere of scale-invariant (SI) models (PROTOCOL.md section 2) and BN-statistics recomputation.

An SI model's trainable parameters are exactly its SI weights (convs and hidden linears; the head is
frozen, BNs have no affine parameters), and they live on ONE sphere: after every step all of them
are multiplied by a common factor so that their total L2 norm is the radius R. Per-tensor spheres
would be wrong for residual networks (models/resnet.py).

`project_` does it for an nn.Module (the image models), `project_rows_` for a population of SI MLPs
stored as stacked tensors (models/mlp.py): projected SGD is a plain SGD step followed by either.
Neither synchronises with the host, so they run every step on CUDA at no cost.

`recompute_bn_stats` is what SWA and linear interpolation need: averaged or interpolated weights
come with no matching BN running statistics, so they are re-estimated with one pass over data.
"""
import torch
from torch import nn


def si_parameters(model):
    """The parameters on the sphere: every trainable parameter of an SI model, in module order."""
    if not getattr(model, "scale_invariant", True):
        raise ValueError(f"{type(model).__name__} is not scale-invariant: it has no sphere")
    params = [p for p in model.parameters() if p.requires_grad]
    for name, p in model.named_parameters():
        if p.requires_grad and p.dim() < 2:  # a bias or a norm's affine scale/shift
            raise ValueError(f"trainable {name} {tuple(p.shape)} breaks scale invariance")
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
    params = si_parameters(model)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(params)).double())
    torch._foreach_mul_(params, (radius / total).to(params[0].dtype))


def project_rows_(w1, w2, radius, n1=None, n2=None):
    """The sphere of a population (models/mlp.py): rescale each row pair of w1, w2 (C, H*D), (C, H*H)
    jointly to norm `radius`, in place; row c holds member c's two weight matrices.

    n1, n2: optional (C,) buffers for the norms; no (C, H*D) temporaries either way.
    """
    n1 = torch.linalg.vector_norm(w1, dim=1, out=n1)
    n2 = torch.linalg.vector_norm(w2, dim=1, out=n2)
    scale = torch.hypot(n1, n2, out=n1).reciprocal_().mul_(radius).unsqueeze(1)  # (C, 1)
    w1.mul_(scale)
    w2.mul_(scale)


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
