"""SI MLP of the synthetic example (PROTOCOL.md sections 3 and 7).

Linear(32->32) -> LN -> ReLU -> Linear(32->32) -> LN -> ReLU -> Linear(32->1), where the LayerNorms
have no affine parameters (eps 1e-7), the hidden layers no bias and the last layer is fixed: it is
rescaled once to Frobenius norm 10 and never trained. The 2 x 32 x 32 = 2048 hidden weights are the
scale-invariant (SI) parameters: they start from a standard normal and live on one sphere.

Two forms of the same function:
- `SIMLP`, an ordinary nn.Module for one model (reference, tests, interactive use);
- `MLPPopulation`, many models as stacked tensors with a hand-written forward and backward. It
  trains thousands of models in lockstep, which is what makes the 50-seed x 23-PLR x 11-FLR sweep
  feasible on a laptop CPU (bench/synthetic.py measures it). tests/test_mlp.py checks both forms
  against each other and the hand-written gradient against autograd.
"""
import math

import torch
from torch import nn

from utils.seeding import generator

LN_EPS = 1e-7


class SIMLP(nn.Module):
    """One SI MLP. `si_parameters()` are the trainable weights on the sphere."""

    def __init__(self, in_dim=32, width=32, head_norm=10.0):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, width, bias=False)
        self.ln1 = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
        self.fc2 = nn.Linear(width, width, bias=False)
        self.ln2 = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
        self.head = nn.Linear(width, 1, bias=False)
        self.head.weight.requires_grad_(False)
        self.head_norm = head_norm

    def forward(self, x):  # x: (N, in_dim) -> logits (N,)
        h = torch.relu(self.ln1(self.fc1(x)))
        h = torch.relu(self.ln2(self.fc2(h)))
        return self.head(h).squeeze(-1)

    def si_parameters(self):
        return [self.fc1.weight, self.fc2.weight]

    def load_member(self, weights):
        """Copy one member's weights (dict w1, w2, w3 as produced by `init_member`)."""
        with torch.no_grad():
            self.fc1.weight.copy_(weights["w1"])
            self.fc2.weight.copy_(weights["w2"])
            self.head.weight.copy_(weights["w3"].view(1, -1))
        return self


def init_member(seed, in_dim=32, width=32, radius=1.0, head_norm=10.0):
    """Initial weights of one model, a function of its model seed alone.

    Hidden weights ~ N(0, 1), then jointly scaled to total norm `radius`; the head starts from
    nn.Linear's default U(-1/sqrt(width), 1/sqrt(width)) and is rescaled to norm `head_norm`.
    """
    g = generator("mlp_init", seed)
    w1 = torch.randn(width, in_dim, generator=g)
    w2 = torch.randn(width, width, generator=g)
    bound = 1.0 / math.sqrt(width)
    w3 = (torch.rand(width, generator=g) * 2 - 1) * bound
    scale = radius / torch.sqrt(w1.pow(2).sum() + w2.pow(2).sum())
    return {"w1": w1 * scale, "w2": w2 * scale, "w3": w3 * (head_norm / w3.norm())}


aten = torch.ops.aten


def _ln_relu(z):
    """LayerNorm (no affine) over the last dim, then ReLU. z: (M, N, H) -> h, mean, rstd."""
    y, mean, rstd = aten.native_layer_norm(z, [z.shape[-1]], None, None, LN_EPS)
    return torch.relu_(y), mean, rstd


def _ln_relu_backward(dh, h, z, mean, rstd):
    """Gradient w.r.t. z of relu(layer_norm(z)); all (M, N, H) except mean, rstd (M, N, 1)."""
    dy = aten.threshold_backward(dh, h, 0)
    return aten.native_layer_norm_backward(dy, z, [z.shape[-1]], mean, rstd, None, None,
                                           [True, False, False])[0]


class MLPPopulation:
    """M = P x G SI MLPs as stacked tensors, trained in lockstep by a hand-written step.

    Members are ordered group-major: group p holds members p*G ... p*G + G - 1, and all members
    of a group see the same mini-batches (in the sweep one group is one (data seed, model seed)
    pair and its members are the LRs).
      w1: (M, H, D)   w2: (M, H, H)   w3: (M, H), fixed
    """

    def __init__(self, w1, w2, w3, groups):
        M, H, D = w1.shape
        if M % groups:
            raise ValueError(f"{M} members do not split into {groups} equal groups")
        self.M, self.H, self.D, self.P, self.G = M, H, D, groups, M // groups
        self.w1, self.w2 = w1.contiguous().clone(), w2.contiguous().clone()
        self.w3 = w3.reshape(M, H, 1).contiguous().clone()

    @classmethod
    def from_members(cls, members, groups):
        """members: list of dicts w1, w2, w3 (as from `init_member`), group-major order."""
        return cls(*(torch.stack([m[k] for m in members]) for k in ("w1", "w2", "w3")), groups)

    def state(self):
        """Member-major weights: w1 (M, H, D), w2 (M, H, H), w3 (M, H)."""
        return {"w1": self.w1, "w2": self.w2, "w3": self.w3.view(self.M, self.H)}

    def weight_norm(self):
        """Norm of each member's SI weights, (M,), accumulated in float64."""
        sq = lambda w: w.reshape(self.M, -1).double().pow(2).sum(1)
        return torch.sqrt(sq(self.w1) + sq(self.w2))

    def _expand(self, x):
        """(P, N, D) group inputs -> (M, N, D), each member its group's inputs."""
        P, N, D = x.shape
        return x.unsqueeze(1).expand(P, self.G, N, D).reshape(self.M, N, D)

    def _forward(self, xm):
        z1 = torch.bmm(xm, self.w1.transpose(1, 2))  # (M, N, H)
        h1, m1, r1 = _ln_relu(z1)
        z2 = torch.bmm(h1, self.w2.transpose(1, 2))
        h2, m2, r2 = _ln_relu(z2)
        logits = torch.bmm(h2, self.w3).squeeze(-1)  # (M, N)
        return logits, (z1, h1, m1, r1, z2, h2, m2, r2)

    @torch.no_grad()
    def logits(self, x):
        """x: (P, N, D) -> logits (P, G, N)."""
        return self._forward(self._expand(x))[0].view(self.P, self.G, -1)

    @torch.no_grad()
    def sgd_step(self, x, y, lr, radius):
        """One projected SGD step on BCE-with-logits (mean over the batch), then the projection.

        x: (P, B, D) each group's batch; y: (P, B) float labels; lr: (M,) actual LR per member.
        Backward is linear in d(loss)/d(logit), so scaling that by lr / B once gives lr-scaled
        gradients everywhere, and the update is fused into the weight-gradient products.
        """
        B = x.shape[1]
        xm = self._expand(x)
        logits, (z1, h1, m1, r1, z2, h2, m2, r2) = self._forward(xm)
        dlogit = (torch.sigmoid(logits).view(self.P, self.G, B) - y.unsqueeze(1))
        dlogit = dlogit.view(self.M, B, 1).mul_(lr.view(self.M, 1, 1) / B)
        dz2 = _ln_relu_backward(dlogit * self.w3.transpose(1, 2), h2, z2, m2, r2)  # (M, B, H)
        dh1 = torch.bmm(dz2, self.w2)
        self.w2.baddbmm_(dz2.transpose(1, 2), h1, alpha=-1.0)
        dz1 = _ln_relu_backward(dh1, h1, z1, m1, r1)
        self.w1.baddbmm_(dz1.transpose(1, 2), xm, alpha=-1.0)
        self.project(radius)

    def project(self, radius):
        """Rescale each member's SI weights jointly to norm `radius` (the sphere)."""
        w1, w2 = self.w1.view(self.M, -1), self.w2.view(self.M, -1)
        n2 = w1.pow(2).sum(1) + w2.pow(2).sum(1)
        scale = torch.rsqrt(n2).mul_(radius).unsqueeze(1)
        w1.mul_(scale)
        w2.mul_(scale)
