"""SI MLP of the synthetic example (docs/protocol.md sections 3 and 7).

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

LN_EPS = 1e-7


class SIMLP(nn.Module):
    """One SI MLP for binary labels (one logit). `si_parameters()` are the trainable weights on the
    sphere. Built like every model of the registry: SIMLP(num_classes=2, in_channels=D, **args),
    where in_channels is the input dimension (32 for the tick data).

    Initial weights, drawn from the global RNG (models.build seeds it from the model seed): the
    hidden weights ~ N(0, 1), then jointly scaled to total norm `init_norm` (the unit sphere); the
    head from nn.Linear's default U(-1/sqrt(width), 1/sqrt(width)), rescaled to norm `head_norm` and
    frozen. The draws come first, in this order, so that a model seed always gives the same weights."""

    scale_invariant = True

    def __init__(self, num_classes=2, in_channels=32, width=32, head_norm=10.0, init_norm=1.0):
        super().__init__()
        if num_classes != 2:
            raise ValueError(f"SIMLP has one logit, for 2 classes, not {num_classes}")
        w1, w2 = torch.randn(width, in_channels), torch.randn(width, width)
        bound = 1.0 / math.sqrt(width)
        w3 = (torch.rand(width) * 2 - 1) * bound
        scale = init_norm / torch.sqrt(w1.pow(2).sum() + w2.pow(2).sum())
        self.fc1 = nn.Linear(in_channels, width, bias=False)
        self.ln1 = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
        self.fc2 = nn.Linear(width, width, bias=False)
        self.ln2 = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
        self.head = nn.Linear(width, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(w1 * scale)
            self.fc2.weight.copy_(w2 * scale)
            self.head.weight.copy_((w3 * (head_norm / w3.norm())).view(1, -1))
        self.head.weight.requires_grad_(False)

    def forward(self, x):  # x: (N, in_dim) -> logits (N,)
        h = torch.relu(self.ln1(self.fc1(x)))
        h = torch.relu(self.ln2(self.fc2(h)))
        return self.head(h).squeeze(-1)

    def si_parameters(self):
        return [self.fc1.weight, self.fc2.weight]


# The population's tensors under SIMLP's state_dict keys: the one checkpoint layout of every run
# holds model.state_dict() keys with a leading member dimension (docs/schema.md).
STATE_KEYS = {"w1": "fc1.weight", "w2": "fc2.weight", "w3": "head.weight"}


def to_state_dict(weights):
    """Population weights {w1 (M, H, D), w2 (M, H, H), w3 (M, H)} -> SIMLP keys, stacked:
    fc1.weight (M, H, D), fc2.weight (M, H, H), head.weight (M, 1, H). Shares storage."""
    return {STATE_KEYS[k]: v.reshape(v.shape[0], 1, -1) if k == "w3" else v for k, v in weights.items()}


def from_state_dict(state):
    """The inverse of `to_state_dict` (the keys present among fc1.weight, fc2.weight, head.weight)."""
    return {k: (state[n].reshape(state[n].shape[0], -1) if k == "w3" else state[n])
            for k, n in STATE_KEYS.items() if n in state}


def project_rows_(w1, w2, radius, n1=None, n2=None):
    """The sphere of a population: rescale each row pair of w1, w2 (C, H*D), (C, H*H) jointly to norm
    `radius`, in place; row c holds member c's two weight matrices (docs/protocol.md section 2).

    n1, n2: optional (C,) buffers for the norms; no (C, H*D) temporaries either way.
    """
    n1 = torch.linalg.vector_norm(w1, dim=1, out=n1)
    n2 = torch.linalg.vector_norm(w2, dim=1, out=n2)
    scale = torch.hypot(n1, n2, out=n1).reciprocal_().mul_(radius).unsqueeze(1)  # (C, 1)
    w1.mul_(scale)
    w2.mul_(scale)


aten = torch.ops.aten


def _ln_relu_into(z, mean, rstd, h, eps):
    """LayerNorm (no affine) over the last dim, then ReLU, into given tensors: z, h (C, N, H);
    mean, rstd (C, N, 1); eps (1,).

    Spelled out because aten's layer-norm forward kernel is slow for rows of 32 (~1.3 us per
    member and layer vs ~0.5 us for these 7 ops); same definitions: biased variance, rstd =
    1 / sqrt(var + eps), so native_layer_norm_backward takes mean and rstd as they are.
    """
    torch.mean(z, -1, keepdim=True, out=mean)
    zc = torch.sub(z, mean, out=h)  # centred, in h's storage
    torch.linalg.vector_norm(zc, dim=-1, keepdim=True, out=rstd)  # sqrt(H * var)
    torch.addcmul(eps, rstd, rstd, value=1.0 / z.shape[-1], out=rstd).rsqrt_()
    zc.mul_(rstd).relu_()


def _ln_relu_backward_(dh, h, z, mean, rstd):
    """Gradient w.r.t. z of relu(layer_norm(z)); all (M, N, H) except mean, rstd (M, N, 1).

    Overwrites dh with the gradient at the LayerNorm output. (The layer-norm backward has no out=
    form that works without weight, so its (M, N, H) result is a fresh tensor.)
    """
    dy = aten.threshold_backward.grad_input(dh, h, 0, grad_input=dh)
    return aten.native_layer_norm_backward(dy, z, [z.shape[-1]], mean, rstd, None, None,
                                           [True, False, False])[0]


# Members per chunk of the CPU step. A chunk's working set (weights 8 KB + activations 14 KB per
# member, ~11 MB at 512) stays in the L3 cache, while each op still covers ~10^5 elements, so the
# ~3-5 us of Python and dispatcher overhead per op is small and intra-op threads get work to split.
# Measured (2-core Zen 3, M = 12650, same-run medians): 256 -> -8%, 384 -> -5%, 512 best,
# 1024 -> -15%; no chunking at all (the full 100+ MB activations) -> -50%.
CPU_CHUNK = 512

# Steps per `sgd_steps` call in training (engine/population.py): each chunk's weights (4 MB at 512
# members) come from memory once per block instead of once per step, since a population's weights
# (100 MB at 12650 members) do not fit in the cache. A SIGTERM is honoured between blocks, which at
# 50 steps of 12650 members on one core is a few seconds.
BLOCK_STEPS = 50

# Member-sample rows per chunk of the forward in evaluation (`forward_chunks`), on a CPU and on a
# GPU. On a CPU, 2^16 rows (128 samples for each of CPU_CHUNK members, 8 MB activation tensors)
# measured 10-30 % faster than 2^12-2^15 and 2.6x faster than whole groups at 2^24 rows.
EVAL_ROWS = {True: 1 << 16, False: 1 << 20}


class MLPPopulation:
    """M = P x G SI MLPs as stacked tensors, trained in lockstep by a hand-written step.

    Members are ordered group-major: group p holds members p*G ... p*G + G - 1, and all members
    of a group see the same mini-batches (in the sweep one group is one (data seed, model seed)
    pair and its members are the LRs).
      w1: (M, H, D)   w2: (M, H, H)   w3: (M, H), fixed
    `chunk` (members per chunk of `sgd_step`) defaults to CPU_CHUNK on CPU and to M on GPUs.
    """

    def __init__(self, w1, w2, w3, groups):
        M, H, D = w1.shape
        if M % groups:
            raise ValueError(f"{M} members do not split into {groups} equal groups")
        self.M, self.H, self.D, self.P, self.G = M, H, D, groups, M // groups
        self.w1, self.w2 = w1.contiguous().clone(), w2.contiguous().clone()
        self.w3 = w3.reshape(M, H, 1).contiguous().clone()
        self.chunk = None
        self._buffers = {}  # work tensors of the step and the forward, by (members, samples, device, dtype)

    @classmethod
    def from_state_dict(cls, state, groups):
        """A population holding a stacked SIMLP state_dict's weights (group-major members)."""
        w = from_state_dict(state)
        return cls(w["w1"], w["w2"], w["w3"], groups)

    def state(self):
        """Member-major weights: w1 (M, H, D), w2 (M, H, H), w3 (M, H)."""
        return {"w1": self.w1, "w2": self.w2, "w3": self.w3.view(self.M, self.H)}

    def weight_norm(self):
        """Norm of each member's SI weights, (M,), accumulated in float64."""
        sq = lambda w: w.reshape(self.M, -1).double().pow(2).sum(1)
        return torch.sqrt(sq(self.w1) + sq(self.w2))

    @torch.no_grad()
    def logits(self, x):
        """x: (P, N, D) -> logits (P, G, N)."""
        out = x.new_empty(self.M, x.shape[1])
        for s, e, n0, n1, logit in self.forward_chunks(x):
            out[s:e, n0:n1] = logit
        return out.view(self.P, self.G, -1)

    @torch.no_grad()
    def forward_chunks(self, x):
        """Logits of every member on its group's samples x (P, N, D), one chunk at a time.

        Yields (s, e, n0, n1, logits (e - s, n1 - n0)) of members s..e-1 on samples n0..n1-1; the
        next chunk overwrites the yielded tensor. A chunk is CPU_CHUNK members (on a CPU) by as
        many samples as make EVAL_ROWS rows, so that the activations stay in the cache; a chunk's
        members see all samples before the next chunk starts, so their weights stay there too.
        """
        M, (P, N, _) = self.M, x.shape
        c = self._chunk_size(x.device)
        n = min(N, max(1, EVAL_ROWS[x.device.type == "cpu"] // c))
        grp = torch.arange(M, device=x.device) // self.G
        for s in range(0, M, c):
            e = min(M, s + c)
            for n0 in range(0, N, n):
                n1 = min(N, n0 + n)
                b = self._work_buffers(e - s, n1 - n0, x)
                yield s, e, n0, n1, self._forward_chunk(s, e, x[:, n0:n1].reshape(P, -1), grp[s:e], b)

    @torch.no_grad()
    def sgd_step(self, x, y, lr, radius):
        """One projected SGD step: `sgd_steps` with K = 1; x: (P, B, D), y: (P, B)."""
        self.sgd_steps(x.unsqueeze(1), y.unsqueeze(1), lr, radius)

    @torch.no_grad()
    def sgd_steps(self, x, y, lr, radius):
        """K projected SGD steps on BCE-with-logits (mean over the batch), each one followed by
        the projection onto the sphere.

        x: (P, K, B, D) each group's batches of K successive steps; y: (P, K, B) float labels;
        lr: (M,) actual LR per member, or (K, M): step k's (a schedule). Backward is linear in
        d(loss)/d(logit), so scaling that by lr / B once gives lr-scaled gradients everywhere, and
        the update is fused into the weight-gradient products.

        Members are processed in chunks (see CPU_CHUNK) that reuse preallocated work tensors:
        every op writes into a buffer (out=, in place), because fresh multi-MB tensors cost page
        faults, and cache-sized chunks keep the ~15 passes over the activations in L3. The loop is
        chunk-major: a chunk takes all K steps before the next one starts, so its weights stay in
        the cache for K steps instead of coming from memory at every step (see BLOCK_STEPS).
        Members are independent and every chunk computes exactly what it would step by step, so
        the result is bit for bit that of K calls with K = 1.
        """
        M, P, G, H, D = self.M, self.P, self.G, self.H, self.D
        K, B = x.shape[1], x.shape[2]
        grp = torch.arange(M, device=x.device) // G  # (M,) group of each member
        # (K or 1, M, 1, H) head, scaled by each step's lr / B
        w3lr = (self.w3.view(1, M, 1, H) * (lr / B).view(-1, M, 1, 1)).to(self.w3.dtype)
        xf = x.reshape(P, K, B * D)
        c = self._chunk_size(x.device)
        for s in range(0, M, c):
            e = min(M, s + c)
            b, g = self._work_buffers(e - s, B, x), grp[s:e]
            for k in range(K):
                w = w3lr[k if len(w3lr) > 1 else 0]
                self._step_chunk(s, e, xf[:, k], y[:, k].index_select(0, g), w[s:e], g, radius, b)

    def _chunk_size(self, device):
        """Members per chunk: `chunk`, else CPU_CHUNK on a CPU and all on a GPU; balanced, so that
        there are as many chunks but the last one is not much smaller."""
        c = self.chunk or (CPU_CHUNK if device.type == "cpu" else self.M)
        return -(-self.M // -(-self.M // c))

    def _work_buffers(self, c, n, x):
        """Work tensors for a chunk of c members on n samples each, made once per shape: every
        op of the step and the forward writes into one (out=, in place), because fresh multi-MB
        tensors cost page faults."""
        key = (c, n, x.device, x.dtype)
        if key not in self._buffers:
            if len(self._buffers) >= 4:  # shapes of training, evaluation and their last chunks
                self._buffers.clear()
            H, D = self.H, self.D
            new = lambda *shape: torch.empty(shape, dtype=x.dtype, device=x.device)
            self._buffers[key] = dict(
                xm=new(c, n, D), z1=new(c, n, H), h1=new(c, n, H), z2=new(c, n, H), h2=new(c, n, H),
                dh=new(c, n, H), m1=new(c, n, 1), r1=new(c, n, 1), m2=new(c, n, 1), r2=new(c, n, 1),
                logit=new(c, 1, n), n1=new(c), n2=new(c), eps=new(1).fill_(LN_EPS))
        return self._buffers[key]

    def _forward_chunk(self, s, e, xf, grp, b):
        """Logits (c, n) of members s..e-1 (c of them) on their groups' samples. xf: (P, n*D) each
        group's samples; grp (c,): the members' groups; b: work tensors for (c, n), which keep the
        activations for the backward."""
        c, H, D = e - s, self.H, self.D
        n = b["xm"].shape[1]
        xm, z1, h1, z2, h2 = b["xm"], b["z1"], b["h1"], b["z2"], b["h2"]  # (c, n, D|H)
        torch.index_select(xf, 0, grp, out=xm.view(c, n * D))  # each member's samples
        torch.bmm(xm, self.w1[s:e].transpose(1, 2), out=z1)
        _ln_relu_into(z1, b["m1"], b["r1"], h1, b["eps"])
        torch.bmm(h1, self.w2[s:e].transpose(1, 2), out=z2)
        _ln_relu_into(z2, b["m2"], b["r2"], h2, b["eps"])
        # (1, H) @ (H, n): the batched GEMM is slow with a single output column, (n, H) @ (H, 1)
        return torch.bmm(self.w3[s:e].view(c, 1, H), h2.transpose(1, 2), out=b["logit"]).view(c, n)

    def _step_chunk(self, s, e, xf, ym, w3lr, grp, radius, b):
        """One step of members s..e-1 (c of them). xf: (P, B*D) the groups' batches; ym (c, B),
        w3lr (c, 1, H), grp (c,): the members' labels, scaled heads and groups; b: work tensors
        for (c, B)."""
        c, B = e - s, b["xm"].shape[1]
        xm, z1, h1, z2, h2, dh = b["xm"], b["z1"], b["h1"], b["z2"], b["h2"], b["dh"]  # (c, B, D|H)
        w1, w2 = self.w1[s:e], self.w2[s:e]  # views, updated in place
        logit = self._forward_chunk(s, e, xf, grp, b)
        # backward: d(loss)/d(logit) = (sigmoid(logit) - y) / B, times lr, which w3lr holds
        dlogit = logit.sigmoid_().sub_(ym).view(c, B, 1)
        torch.mul(dlogit, w3lr, out=dh)  # d/dh2 (c, B, H), lr-scaled from here on
        dz = _ln_relu_backward_(dh, h2, z2, b["m2"], b["r2"])  # d/dz2
        torch.bmm(dz, w2, out=dh)  # d/dh1, before w2 moves
        w2.baddbmm_(dz.transpose(1, 2), h1, alpha=-1.0)  # w2 -= lr * dz2^T h1
        dz = _ln_relu_backward_(dh, h1, z1, b["m1"], b["r1"])  # d/dz1
        w1.baddbmm_(dz.transpose(1, 2), xm, alpha=-1.0)
        project_rows_(w1.view(c, -1), w2.view(c, -1), radius, b["n1"], b["n2"])

    def project(self, radius):
        """Rescale each member's SI weights jointly to norm `radius` (the sphere)."""
        project_rows_(self.w1.view(self.M, -1), self.w2.view(self.M, -1), radius)
