"""ViT-Small (models/vit.py): shapes, errors, LSA, size, and equality with vit-pytorch.

The reference is vit-pytorch's vit_for_small_dataset.ViT (a test-only dependency, bench/requirements.txt;
the tests that need it skip without it) with the authors' two LayerNorms patched into its FeedForward.
Weights go across by an explicit map of state_dict keys that must cover both models' keys. Outputs are
compared in float64, where the two implementations differ only by the order of a few roundings.
"""
import math

import pytest
import torch
from torch import nn

from models.custom import construct
from models.vit import ViTSmall
from core.errors import UserError

SMALL = dict(dim=32, depth=2, heads=2, dim_head=16, mlp_dim=32)
# (in_channels, image_size, classes): CIFAR-like RGB and MNIST-like greyscale
CASES = [(3, 32, 10), (1, 28, 100)]
IDS = ["rgb32", "grey28"]


@pytest.fixture(autouse=True)
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _images(n, channels, size, seed=0, dtype=torch.float32):
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("in_ch,size,classes", CASES, ids=IDS)
def test_output_shape(in_ch, size, classes):
    model = ViTSmall(num_classes=classes, in_channels=in_ch, image_size=size, patch_size=4, **SMALL)
    assert model.pos_embedding.shape == (1, (size // 4) ** 2 + 1, 32)
    assert model(_images(5, in_ch, size)).shape == (5, classes)


def test_non_divisible_image_size():
    with pytest.raises(ValueError, match="image_size 30 is not divisible by patch_size 4"):
        ViTSmall(image_size=30, **SMALL)
    # through the repository's constructor: one line naming the cause
    with pytest.raises(UserError) as e:
        construct(ViTSmall, 10, 3, dict(image_size=30, **SMALL))
    assert "not divisible by patch_size" in str(e.value) and "\n" not in str(e.value)


def test_wrong_input_size():
    with pytest.raises(ValueError, match="built for 32x32 images, got 28x28"):
        ViTSmall(**SMALL)(_images(2, 3, 28))


def test_lsa_temperature_and_masked_diagonal():
    torch.manual_seed(0)
    model = ViTSmall(**SMALL).eval()
    tokens = torch.randn(3, 65, 32)
    for block in model.blocks:
        lsa = block.attn
        assert lsa.temperature.item() == pytest.approx(math.log(16 ** -0.5), rel=1e-6)
        attn, _ = lsa.attention(tokens)
        assert attn.shape == (3, 2, 65, 65)
        assert torch.all(torch.diagonal(attn, dim1=-2, dim2=-1) == 0)  # exactly: exp underflows to 0
        assert torch.allclose(attn.sum(-1), torch.ones(3, 2, 65))
    # and in a full-size model
    assert ViTSmall().blocks[0].attn.temperature.item() == pytest.approx(math.log(64 ** -0.5), rel=1e-6)


def test_every_parameter_trains():
    """One backward in train mode reaches every parameter, the temperatures included."""
    torch.manual_seed(0)
    model = ViTSmall(**SMALL)
    nn.functional.cross_entropy(model(_images(4, 3, 32)), torch.arange(4)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_count_default_cifar10():
    model = ViTSmall(num_classes=10, in_channels=3)
    d, m, patch_dim = 512, 512, 5 * 3 * 4 * 4
    lsa = 1 + 2 * d + d * 3 * 8 * 64 + 8 * 64 * d + d     # temperature, norm, qkv, out
    ff = 2 * d + (d * m + m) + 2 * m + (m * d + d) + 2 * d  # norm, fc1, norm1, fc2, norm2
    expected = (2 * patch_dim + patch_dim * d + d) + 65 * d + d + 6 * (lsa + ff) + 2 * d + (d * 10 + 10)
    assert expected == 9_634_800
    assert sum(p.numel() for p in model.parameters()) == expected


# ---- against vit-pytorch ----------------------------------------------------------------------------

@pytest.fixture
def reference(monkeypatch):
    """vit_for_small_dataset with the authors' FeedForward: a builder of reference models."""
    vfs = pytest.importorskip("vit_pytorch.vit_for_small_dataset")
    original = vfs.FeedForward

    class AuthorsFeedForward(original):
        def __init__(self, dim, hidden_dim, dropout=0.0):
            super().__init__(dim, hidden_dim, dropout)
            net = list(self.net)
            # the addition is exactly two LayerNorms: check what is there before inserting them
            assert [type(m) for m in net] == [nn.LayerNorm, nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.Dropout]
            self.net = nn.Sequential(net[0], net[1], nn.LayerNorm(hidden_dim), *net[2:5], nn.LayerNorm(dim), net[5])

    monkeypatch.setattr(vfs, "FeedForward", AuthorsFeedForward)  # Transformer looks it up when built

    def build(in_ch, size, classes, dropout=0.0, **kw):
        return vfs.ViT(image_size=size, patch_size=4, num_classes=classes, channels=in_ch, dim=kw["dim"],
                       depth=kw["depth"], heads=kw["heads"], dim_head=kw["dim_head"], mlp_dim=kw["mlp_dim"],
                       dropout=dropout, emb_dropout=dropout)
    return build


def key_map(depth):
    """vit-pytorch state_dict key -> ours. Reference FeedForward.net after the patch: 0 LayerNorm,
    1 Linear, 2 LayerNorm (added), 3 GELU, 4 Dropout, 5 Linear, 6 LayerNorm (added), 7 Dropout."""
    wb = ("weight", "bias")
    modules = [("to_patch_embedding.to_patch_tokens.1", "spt.norm", wb),
               ("to_patch_embedding.to_patch_tokens.2", "spt.proj", wb),
               ("mlp_head.0", "norm", wb), ("mlp_head.1", "head", wb)]
    for i in range(depth):
        r, o = f"transformer.layers.{i}", f"blocks.{i}"
        modules += [(f"{r}.0.norm", f"{o}.attn.norm", wb), (f"{r}.0.to_qkv", f"{o}.attn.qkv", ("weight",)),
                    (f"{r}.0.to_out.0", f"{o}.attn.out", wb), (f"{r}.1.net.0", f"{o}.ff.norm", wb),
                    (f"{r}.1.net.1", f"{o}.ff.fc1", wb), (f"{r}.1.net.2", f"{o}.ff.norm1", wb),
                    (f"{r}.1.net.5", f"{o}.ff.fc2", wb), (f"{r}.1.net.6", f"{o}.ff.norm2", wb)]
    keys = {f"{r}.{p}": f"{o}.{p}" for r, o, params in modules for p in params}
    keys.update({"pos_embedding": "pos_embedding", "cls_token": "cls_token"})
    keys.update({f"transformer.layers.{i}.0.temperature": f"blocks.{i}.attn.temperature" for i in range(depth)})
    return keys


def _mapped(ref_state, depth):
    keys = key_map(depth)
    assert sorted(keys) == sorted(ref_state)  # every reference key is mapped ...
    return {keys[k]: v for k, v in ref_state.items()}


def _load_from(model, ref):
    state = _mapped(ref.state_dict(), len(model.blocks))
    assert sorted(state) == sorted(model.state_dict())  # ... onto every key of ours
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("in_ch,size,classes", CASES, ids=IDS)
def test_matches_vit_pytorch_eval(reference, in_ch, size, classes):
    torch.manual_seed(1)
    ref = reference(in_ch, size, classes, dropout=0.1, **SMALL).double().eval()
    with torch.no_grad():  # move every parameter off its init (LayerNorms 1/0, temperature) before copying
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch.manual_seed(2)  # a different init of ours, all of it overwritten
    ours = _load_from(ViTSmall(num_classes=classes, in_channels=in_ch, image_size=size, **SMALL).double().eval(),
                      ref)
    x = _images(6, in_ch, size, dtype=torch.float64)
    with torch.no_grad():
        expected = ref(x)
        assert torch.allclose(ours(x), expected, rtol=0, atol=1e-12), (ours(x) - expected).abs().max()


def test_same_seed_same_initial_weights(reference):
    """Modules are created in the reference's order, so one seed gives both the same weights."""
    torch.manual_seed(3)
    ref = reference(3, 32, 10, **SMALL)
    torch.manual_seed(3)
    ours = ViTSmall(**SMALL)
    mapped, own = _mapped(ref.state_dict(), 2), ours.state_dict()
    for k, v in mapped.items():
        assert torch.equal(own[k], v), k


def test_matches_vit_pytorch_train_mode_dropout(reference):
    """Dropout in the same places, drawn in the same order: equal train-mode outputs and gradients from
    one seed, once the reference's dropout on the attention weights (not in the authors' LSA) is removed."""
    torch.manual_seed(4)
    ref = reference(3, 32, 10, dropout=0.1, **SMALL).double().train()
    for layer in ref.transformer.layers:
        layer[0].dropout = nn.Identity()
    ours = _load_from(ViTSmall(**SMALL).double().train(), ref)
    x, y = _images(6, 3, 32, dtype=torch.float64), torch.arange(6)
    outs = []
    for model in (ref, ours):
        torch.manual_seed(5)
        out = model(x)
        nn.functional.cross_entropy(out, y).backward()
        outs.append(out)
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-12)
    assert not torch.allclose(outs[1], ours.eval()(x))  # dropout did act
    grads = _mapped({k: p.grad for k, p in ref.named_parameters()}, 2)
    for k, p in ours.named_parameters():
        assert torch.allclose(p.grad, grads[k], rtol=0, atol=1e-10), k
