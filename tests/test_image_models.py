"""SI ConvNet and ResNet-18: scale invariance, the sphere, the frozen head, BN recomputation, sizes.

Invariance is checked in float64 with BatchNorm eps set to 1e-30 (torch refuses 0 in train mode): eps
is the one thing that breaks exact invariance (var + eps is not homogeneous in the weight scale), so
with a negligible eps what remains is the architecture's algebra, which must hold to rounding.
"""
import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from models.convnet import ConvNetSI
from models.resnet import Pointwise, ResNet18
from engine.sphere import project_, recompute_bn_stats, si_norm, si_parameters

# (constructor, width, input channels, classes)
SI_CASES = [(ConvNetSI, 4, 3, 10), (ConvNetSI, 8, 1, 100), (ResNet18, 4, 3, 10), (ResNet18, 8, 1, 100)]
IDS = [f"{f.__name__}-w{w}-in{i}-c{c}" for f, w, i, c in SI_CASES]


def _inputs(n, channels, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, 32, 32, generator=g, dtype=torch.float64)


def _model(make, width, in_ch, classes, seed=0):
    torch.manual_seed(seed)
    model = make(width=width, num_classes=classes, in_channels=in_ch).double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-30
    return model


def _scaled(model, c):
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in si_parameters(other):
            p.mul_(c)
    return other


@pytest.mark.parametrize("make,width,in_ch,classes", SI_CASES, ids=IDS)
@pytest.mark.parametrize("c", [0.1, 7.0])
def test_scale_invariance(make, width, in_ch, classes, c):
    model = _model(make, width, in_ch, classes)
    other = _scaled(model, c)
    x = _inputs(8, in_ch, 1)
    out = model(x)  # train mode: batch statistics
    assert out.shape == (8, classes)
    torch.testing.assert_close(other(x), out, rtol=1e-9, atol=1e-9)
    # eval mode: running statistics re-estimated on the same batches for both
    fit = [_inputs(8, in_ch, s) for s in (2, 3, 4)]
    for m in (model, other):
        recompute_bn_stats(m, fit).eval()
    torch.testing.assert_close(other(x), model(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make,width,in_ch,classes", SI_CASES, ids=IDS)
def test_sphere_params_and_frozen_head(make, width, in_ch, classes):
    model = make(width=width, num_classes=classes, in_channels=in_ch)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    params = si_parameters(model)
    assert len(params) == len(convs) and all(p is q for p, q in zip(params, convs))
    head = model[-1] if isinstance(model, ConvNetSI) else model.head
    assert not any(p.requires_grad for p in head.parameters())
    assert abs(head.weight.norm().item() - 10.0) < 1e-5
    assert (head.bias is not None) == isinstance(model, ConvNetSI)  # ConvNet keeps a frozen bias
    assert not any(m.affine for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_project_one_common_factor(dtype, tol):
    model = ResNet18(width=4).to(dtype)
    before = [p.detach().clone() for p in si_parameters(model)]
    head = model.head.weight.detach().clone()
    project_(model, 3.5)
    assert abs(si_norm(model) - 3.5) < 3.5 * tol
    factor = 3.5 / torch.sqrt(sum(q.double().pow(2).sum() for q in before))  # computed apart
    for p, q in zip(si_parameters(model), before):  # one common factor, not one per tensor
        torch.testing.assert_close(p, (q.double() * factor).to(dtype), rtol=10 * tol, atol=0)
    assert torch.equal(model.head.weight, head)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_project_cuda_without_host_sync():
    model = ConvNetSI(width=8).cuda()
    torch.cuda.set_sync_debug_mode("error")  # any device->host sync raises
    try:
        project_(model, 12.0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert abs(si_norm(model) - 12.0) < 1e-4


def test_recompute_bn_stats_matches_update_bn():
    model = ResNet18(width=4).double()
    fit = [_inputs(8, 3, s) for s in (5, 6, 7)]
    model.train()
    model(_inputs(8, 3, 9) * 5 + 3)  # stale statistics that must not leak into the result
    ref = copy.deepcopy(model)
    update_bn(fit, ref)
    model.eval()
    recompute_bn_stats(model, fit)
    assert not model.training  # mode restored
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in bns)  # momenta restored
    for (name, a), (_, b) in zip(model.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    with pytest.raises(ValueError):
        recompute_bn_stats(model, [])


def test_practical_resnet_is_not_scale_invariant():
    torch.manual_seed(0)
    model = ResNet18(width=4, scale_invariant=False).double()
    assert model.head.weight.requires_grad and model.head.bias.requires_grad
    assert all(m.affine for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="not scale-invariant"):
        si_parameters(model)
    x = _inputs(8, 3, 1)
    out = model(x)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():  # every trainable tensor, as an SI model would allow
            p.mul_(7.0)
    assert (other(x) - out).abs().max() > 1.0  # the trainable head alone scales the logits by 7


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_pointwise_is_the_strided_1x1_convolution(fmt):
    """The ResNets' shortcut convolution (on CPUs: subsample, then a stride-1 convolution) computes
    nn.Conv2d's strided 1x1 convolution, its output and both gradients, at width 4 (where torch's
    own channels_last kernel for it hangs on CPUs) and an odd image size (the last row is kept)."""
    torch.manual_seed(0)
    pw, conv = Pointwise(4, 8, 2), nn.Conv2d(4, 8, 1, 2, bias=False)
    assert pw.state_dict().keys() == conv.state_dict().keys()
    conv.load_state_dict(pw.state_dict())
    pw = pw.to(memory_format=fmt)
    x = torch.randn(6, 4, 9, 9)
    xs = [x.clone().contiguous(memory_format=fmt).requires_grad_(), x.clone().requires_grad_()]
    outs = [pw(xs[0]), conv(xs[1])]  # the reference in NCHW, torch's strided kernel
    assert outs[0].shape == (6, 8, 5, 5)
    g = torch.randn(6, 8, 5, 5)
    for out in outs:
        out.backward(g)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    torch.testing.assert_close(pw.weight.grad, conv.weight.grad)
    assert xs[0].grad[:, :, 1::2].abs().max() == 0 and xs[0].grad[:, :, ::2, ::2].abs().min() > 0


def test_parameter_counts():
    # ConvNetSI(c): convs 9(3c + 2c^2 + 8c^2 + 32c^2) = 27c + 378c^2; head 8c x 10 + 10 (frozen)
    convnet = ConvNetSI(width=32)
    assert sum(p.numel() for p in si_parameters(convnet)) == 27 * 32 + 378 * 32 ** 2 == 387_936
    assert sum(p.numel() for p in convnet.parameters()) == 387_936 + 2_570
    # ResNet18(k) convs: stem 27k; stage 1 4 x 9k^2 = 36k^2; stage 2 (18 + 36 + 2 + 72)k^2 = 128k^2;
    # stage 3 512k^2; stage 4 2048k^2 -> 27k + 2724k^2; SI head 8k x 10, no bias (frozen)
    si = ResNet18(width=32)
    assert sum(p.numel() for p in si_parameters(si)) == 27 * 32 + 2724 * 32 ** 2 == 2_790_240
    assert sum(p.numel() for p in si.parameters()) == 2_790_240 + 2_560
    # practical k = 64: convs + BN affine 2 x 68k (BN channels: 4k + 8k + 16k + 32k in the stages
    # incl. shortcut BNs, 8k in the head) + head 8k x 10 + 10, all trainable
    practical = ResNet18(width=64, scale_invariant=False)
    n = 27 * 64 + 2724 * 64 ** 2 + 2 * 68 * 64 + 512 * 10 + 10
    assert sum(p.numel() for p in practical.parameters() if p.requires_grad) == n == 11_173_066
    # default-init norms are close to the authors' radii R = 12 (ConvNet) and R = 28 (ResNet)
    assert 11 < si_norm(convnet) < 14 and 26 < si_norm(si) < 31
