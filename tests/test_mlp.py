"""The SI MLP: scale invariance, the sphere, and the population step against autograd."""
import pytest
import torch
import torch.nn.functional as F

from models.mlp import MLPPopulation, SIMLP, init_member


def members(P, G, seed0=0):
    return [init_member(seed0 + m // G) for m in range(P * G)]  # all LRs of a group share the init


def reference_step(weights, x, y, lr, radius):
    """One autograd SGD step on one SIMLP, then the joint projection onto the sphere."""
    net = SIMLP().load_member(weights)
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


@pytest.mark.parametrize("radius", [1.0, 2.5])
def test_population_step_equals_autograd(radius):
    P, G = 3, 4
    mem = members(P, G)
    for m in mem:  # start on the sphere of this radius
        m["w1"], m["w2"] = m["w1"] * radius, m["w2"] * radius
    lr = torch.linspace(1e-3, 0.5, P * G)
    x, y = batch(P)
    pop = MLPPopulation.from_members(mem, P)
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
    logits = MLPPopulation.from_members(mem, P).logits(x)  # (P, G, N)
    for m in range(P * G):
        torch.testing.assert_close(logits[m // G, m % G], SIMLP().load_member(mem[m])(x[m // G]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("c", [0.25, 3.0, 1000.0])
def test_scale_invariance(c):
    # Exact up to LayerNorm's eps (1e-7 against a pre-activation variance ~1e-2 at norm 1): at
    # c = 0.01 the variance falls to ~1e-6 and eps visibly shifts the logits, as it should.
    w = init_member(7)
    x, _ = batch(1, B=64)
    ref = SIMLP().load_member(w)(x[0])
    scaled = dict(w, w1=w["w1"] * c, w2=w["w2"] * c)
    tol = dict(rtol=1e-3, atol=1e-3)  # logits are O(10) (head norm 10); eps moves them by ~1e-4 relative
    torch.testing.assert_close(SIMLP().load_member(scaled)(x[0]), ref, **tol)
    torch.testing.assert_close(MLPPopulation.from_members([scaled], 1).logits(x)[0, 0], ref, **tol)
    # the head is not scale-invariant: scaling it scales the logits (so the check above can fail)
    assert not torch.allclose(SIMLP().load_member(dict(w, w3=w["w3"] * 2))(x[0]), ref)


@pytest.mark.parametrize("radius", [1.0, 2.5])
def test_weights_stay_on_the_sphere_after_every_step(radius):
    P, G = 2, 5
    pop = MLPPopulation.from_members(members(P, G), P)
    pop.project(radius)
    lr = torch.logspace(-3, 0, P * G) * radius ** 2
    for step in range(50):
        x, y = batch(P, seed=step)
        pop.sgd_step(x, y, lr, radius)
        assert (pop.weight_norm() - radius).abs().max() < 1e-5 * radius


def test_init_is_deterministic_and_normalised():
    a, b, c = init_member(3), init_member(3), init_member(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["w1"], c["w1"])
    assert abs(torch.sqrt(a["w1"].pow(2).sum() + a["w2"].pow(2).sum()) - 1) < 1e-6
    assert abs(a["w3"].norm() - 10) < 1e-5
    assert abs(init_member(3, radius=2.0)["w1"].norm() / a["w1"].norm() - 2) < 1e-5


def test_member_trained_in_population_equals_member_trained_alone():
    P, G, steps = 3, 4, 30
    mem = members(P, G)
    lr = torch.logspace(-3, -1.5, P * G)
    pop = MLPPopulation.from_members(mem, P)
    target = 6  # group 1, member 2
    alone = MLPPopulation.from_members([mem[target]], 1)
    for step in range(steps):
        x, y = batch(P, seed=step)
        pop.sgd_step(x, y, lr, 1.0)
        alone.sgd_step(x[target // G:target // G + 1], y[target // G:target // G + 1], lr[target:target + 1], 1.0)
    for k in ("w1", "w2"):
        torch.testing.assert_close(pop.state()[k][target], alone.state()[k][0], atol=1e-5, rtol=0)
