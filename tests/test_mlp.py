"""The SI MLP: scale invariance, the sphere, and the population step against autograd.

MLPPopulation.sgd_step works through the members in chunks (models/mlp.py, CPU_CHUNK); tests
that take `chunk` also run it with chunks of 5 members, so that chunks cut through groups and the
last chunk is shorter, as in the big populations (12 or 10 members fit in one default chunk).
"""
import pytest
import torch
import torch.nn.functional as F

import models.mlp as mlp
from core.seeding import generator
from models import build
from models.mlp import LN_EPS, MLPPopulation

CHUNKS = [None, 5]  # default (one chunk here), and chunks that straddle groups


@pytest.fixture(autouse=True)
def one_thread():
    """These populations are tiny: a second intra-op thread only adds synchronisation, and on a
    busy machine (the other core taken) each parallel region can wait a whole time slice (seen:
    5 s -> 25 s for this file)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def init_member(seed, radius=1.0):
    """Model seed `seed`'s initial weights as models.build draws them: {w1 (32, 32), w2, w3 (32,)}."""
    state = build("mlp_si", seed, num_classes=2, in_channels=32, init_norm=radius).state_dict()
    return {k: v[0] for k, v in mlp.from_state_dict({k: v[None] for k, v in state.items()}).items()}


def net_of(w):
    """An SIMLP holding the weights w (dict w1, w2, w3)."""
    net = build("mlp_si", 0, num_classes=2, in_channels=32)
    with torch.no_grad():
        net.fc1.weight.copy_(w["w1"])
        net.fc2.weight.copy_(w["w2"])
        net.head.weight.copy_(w["w3"].view(1, -1))
    return net


def from_members(mem, P):
    return MLPPopulation(*(torch.stack([m[k] for m in mem]) for k in ("w1", "w2", "w3")), P)


def members(P, G, seed0=0):
    return [init_member(seed0 + m // G) for m in range(P * G)]  # all LRs of a group share the init


def population(mem, P, chunk=None):
    pop = from_members(mem, P)
    pop.chunk = chunk
    return pop


def reference_step(weights, x, y, lr, radius):
    """One autograd SGD step on one SIMLP, then the joint projection onto the sphere."""
    net = net_of(weights)
    F.binary_cross_entropy_with_logits(net(x), y).backward()
    with torch.no_grad():
        for w in net.si_parameters():
            w -= lr * w.grad
        norm = torch.sqrt(sum(w.pow(2).sum() for w in net.si_parameters()))
        for w in net.si_parameters():
            w *= radius / norm
    return net.fc1.weight.detach(), net.fc2.weight.detach()


def batch(P, B=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(P, B, 32, generator=g), (torch.rand(P, B, generator=g) > 0.5).float()


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("radius", [1.0, 2.5])
def test_population_step_equals_autograd(radius, chunk):
    P, G = 3, 4
    mem = [init_member(m) for m in range(P * G)]  # every member its own init
    for m in mem:  # start on the sphere of this radius
        m["w1"], m["w2"] = m["w1"] * radius, m["w2"] * radius
    lr = torch.linspace(1e-3, 0.5, P * G)[torch.randperm(P * G, generator=torch.Generator().manual_seed(1))]
    x, y = batch(P, seed=2)
    pop = population(mem, P, chunk)
    pop.sgd_step(x, y, lr, radius)
    for m in range(P * G):
        w1, w2 = reference_step(mem[m], x[m // G], y[m // G], lr[m].item(), radius)
        torch.testing.assert_close(pop.state()["w1"][m], w1, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(pop.state()["w2"][m], w2, atol=1e-6, rtol=1e-5)
    assert torch.equal(pop.state()["w3"], torch.stack([m["w3"] for m in mem]))  # the head never moves


def test_population_logits_equal_module():
    P, G = 2, 3
    mem = [init_member(s) for s in range(P * G)]
    x, _ = batch(P, B=40)
    logits = from_members(mem, P).logits(x)  # (P, G, N)
    for m in range(P * G):
        torch.testing.assert_close(logits[m // G, m % G], net_of(mem[m])(x[m // G]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("c", [0.01, 3.0, 1000.0])
def test_scale_invariance(c, monkeypatch):
    """Scaling fc1 and fc2 by c leaves the logits alone; the head is not scale-invariant.

    LayerNorm's eps breaks the invariance slightly: LN_eps(c z) = LN_{eps / c^2}(z). Scaling up
    (c >= 1) only shrinks eps against the variance (~1e-2 at norm 1), so the logits stay put with
    eps fixed; at c = 0.01 the variance falls to ~1e-6 and eps = 1e-7 moves the logits by ~10%
    (a real property of the model), so there the check scales eps by c^2 and is then exact.
    """
    w = init_member(7)
    x, _ = batch(1, B=64)
    ref = net_of(w)(x[0])
    tol = dict(rtol=1e-4, atol=1e-4 * ref.abs().max().item())  # relative to the logits' scale (~10)
    scaled = dict(w, w1=w["w1"] * c, w2=w["w2"] * c)
    eps = LN_EPS if c >= 1 else LN_EPS * c ** 2
    net = net_of(scaled)
    net.ln1.eps = net.ln2.eps = eps
    torch.testing.assert_close(net(x[0]), ref, **tol)
    monkeypatch.setattr(mlp, "LN_EPS", eps)  # what the population's forward reads
    torch.testing.assert_close(from_members([scaled], 1).logits(x)[0, 0], ref, **tol)
    # the head is not scale-invariant: scaling it scales the logits (so the checks above can fail)
    assert not torch.allclose(net_of(dict(w, w3=w["w3"] * 2))(x[0]), ref)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("radius", [1.0, 2.5])
def test_weights_stay_on_the_sphere_after_every_step(radius, chunk):
    P, G = 2, 5
    pop = population(members(P, G), P, chunk)
    pop.project(radius)
    lr = torch.logspace(-3, 0, P * G) * radius ** 2
    for step in range(50):
        x, y = batch(P, seed=step)
        pop.sgd_step(x, y, lr, radius)
        assert (pop.weight_norm() - radius).abs().max() < 1e-5 * radius


def test_init_is_the_published_runs_draw():
    """models.build draws the SI MLP's initial weights exactly as the synthetic runs published in
    docs/results.md were drawn: a generator keyed ("mlp_init", seed), N(0, 1) hidden weights scaled
    jointly to norm 1, the head U(-1/sqrt(32), 1/sqrt(32)) rescaled to norm 10; bit for bit."""
    for seed in (0, 3, 41):
        g = generator("mlp_init", seed)
        w1, w2 = torch.randn(32, 32, generator=g), torch.randn(32, 32, generator=g)
        w3 = (torch.rand(32, generator=g) * 2 - 1) * (1.0 / 32 ** 0.5)
        scale = 1.0 / torch.sqrt(w1.pow(2).sum() + w2.pow(2).sum())
        got = init_member(seed)
        assert torch.equal(got["w1"], w1 * scale) and torch.equal(got["w2"], w2 * scale)
        assert torch.equal(got["w3"], w3 * (10.0 / w3.norm()))
    net = build("mlp_si", 0, num_classes=2, in_channels=32)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["fc1.weight", "fc2.weight"]


def test_init_is_deterministic_and_normalised():
    a, b, c = init_member(3), init_member(3), init_member(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a)
    assert abs(torch.sqrt(a["w1"].pow(2).sum() + a["w2"].pow(2).sum()) - 1) < 1e-6
    assert abs(a["w3"].norm() - 10) < 1e-5
    r2 = init_member(3, radius=2.0)
    assert abs(torch.sqrt(r2["w1"].pow(2).sum() + r2["w2"].pow(2).sum()) - 2) < 1e-5
    assert torch.allclose(r2["w1"], 2 * a["w1"]) and torch.equal(r2["w3"], a["w3"])


@pytest.mark.parametrize("chunk", CHUNKS)
def test_member_trained_in_population_equals_member_trained_alone(chunk):
    P, G, steps = 3, 4, 30
    mem = members(P, G)
    lr = torch.logspace(-3, -1.5, P * G)
    pop = population(mem, P, chunk)
    target = 6  # group 1, member 2 (with chunk 5: in the chunk of members 5..9, which spans groups 1, 2)
    alone = from_members([mem[target]], 1)
    p = target // G
    for step in range(steps):
        x, y = batch(P, seed=step)
        pop.sgd_step(x, y, lr, 1.0)
        alone.sgd_step(x[p:p + 1], y[p:p + 1], lr[target:target + 1], 1.0)
    for k in ("w1", "w2"):
        torch.testing.assert_close(pop.state()[k][target], alone.state()[k][0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_block_of_steps_equals_steps_one_by_one(chunk):
    """sgd_steps runs chunk-major (each chunk takes all K steps before the next): bit for bit the
    same weights as K single steps, which run step-major."""
    P, G, K = 3, 4, 7
    mem = members(P, G)
    lr = torch.logspace(-3, -0.5, P * G)
    xs, ys = zip(*(batch(P, seed=k) for k in range(K)))
    x, y = torch.stack(xs, 1), torch.stack(ys, 1)  # (P, K, B, D), (P, K, B)
    one_by_one, block = population(mem, P, chunk), population(mem, P, chunk)
    for k in range(K):
        one_by_one.sgd_step(x[:, k], y[:, k], lr, 1.0)
    block.sgd_steps(x, y, lr, 1.0)
    for k in ("w1", "w2"):
        assert torch.equal(block.state()[k], one_by_one.state()[k])
    assert not torch.equal(block.state()["w1"], population(mem, P).state()["w1"])  # it did move
